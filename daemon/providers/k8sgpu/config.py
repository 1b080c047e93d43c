"""The `[k8sgpu]` config section."""

from __future__ import annotations

from daemon.config import ProviderLimits, ProviderUrl


class K8sGpuConfig(ProviderLimits):
    """The Seeweb Serverless GPU API: a username and a password file."""

    url: ProviderUrl = "https://api.seeweb.it"
    username: str
    password_file: str
