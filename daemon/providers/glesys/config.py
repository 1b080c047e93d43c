"""The `[glesys]` config section."""

from __future__ import annotations

from daemon.config import ProviderUrl, Section


class GlesysConfig(Section):
    """The Glesys API: a project and an API key file."""

    url: ProviderUrl = "https://api.glesys.com"
    project: str
    key_file: str
