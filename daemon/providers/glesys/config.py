"""The `[glesys]` config section."""

from __future__ import annotations

from daemon.config import ProviderLimits, ProviderUrl


class GlesysConfig(ProviderLimits):
    """The Glesys API: a project and an API key file."""

    url: ProviderUrl = "https://api.glesys.com"
    project: str
    key_file: str
