"""The `[seeweb]` config section."""

from __future__ import annotations

from pydantic import Field, model_validator

from daemon.config import Interval, ProviderLimits, ProviderUrl


class SeewebConfig(ProviderLimits):
    """The Seeweb ECS API: an API token file, or a username and a password file."""

    url: ProviderUrl = "https://api.seeweb.it"
    token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    watch: list[str] = Field(default_factory=lambda: ["*"])
    stuck_after: Interval = 1800.0

    @model_validator(mode="after")
    def _one_credential(self) -> SeewebConfig:
        token = self.token_file is not None
        login = self.username is not None or self.password_file is not None
        if token == login or (login and (self.username is None or self.password_file is None)):
            raise ValueError("give either token_file, or username and password_file")
        return self
