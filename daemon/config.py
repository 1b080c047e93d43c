"""The daemon's TOML configuration: parsed, checked, and with its secrets read from files."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.durations import Seconds
from daemon.errors import ConfigError
from daemon.net import Listen
from daemon.providers.base import Secret

DEFAULT_CONFIG_PATH = Path("/etc/cloudpilot/cloudpilot.toml")
MAX_SECRET_BYTES = 64 * 1024
MAX_GRACE_S = 15.0


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


Interval = Annotated[Seconds, AfterValidator(_positive)]


def _listen(value: str) -> str:
    Listen.parse(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpConfig(_Section):
    """Where `/metrics`, `/healthz`, `/readyz` and `/status` are served."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"


class StateConfig(_Section):
    """Where the durable state lives."""

    path: str = "/var/lib/cloudpilot/state.db"
    dsn: str | None = None

    @field_validator("dsn")
    @classmethod
    def _no_postgres_yet(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("the PostgreSQL store is not available yet; use path (SQLite)")
        return value


class SeewebConfig(_Section):
    """The Seeweb ECS API: an API token file, or a username and a password file."""

    url: str = "https://api.seeweb.it"
    token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    watch: list[str] = Field(default_factory=lambda: ["*"])
    stuck_after: Interval = 3600.0

    @model_validator(mode="after")
    def _one_credential(self) -> SeewebConfig:
        token = self.token_file is not None
        login = self.username is not None or self.password_file is not None
        if token == login or (login and (self.username is None or self.password_file is None)):
            raise ValueError("give either token_file, or username and password_file")
        return self


class K8sGpuConfig(_Section):
    """The Seeweb Serverless GPU API: a username and a password file."""

    url: str = "https://api.seeweb.it"
    username: str
    password_file: str


class GlesysConfig(_Section):
    """The Glesys API: a project and an API key file."""

    url: str = "https://api.glesys.com"
    project: str
    key_file: str


class PollConfig(_Section):
    """How often each source polls."""

    actions: Interval = 30.0
    logs: Interval = 60.0
    metrics: Interval = 300.0
    k8sgpu: Interval = 30.0
    billing: Interval = 3600.0
    glesys: Interval = 60.0


class EngineConfig(_Section):
    """How the rule engine treats what the sources bring."""

    stale_after: Interval = 3600.0


def _fits_the_stop_timeout(value: float) -> float:
    # The unit's TimeoutStopSec=30s must also cover stopping the polls and closing the store.
    if value > MAX_GRACE_S:
        raise ValueError(f"must be at most {MAX_GRACE_S:g}s, to stop inside systemd's timeout")
    return value


class ShutdownConfig(_Section):
    """How long a stop waits for running actions before cancelling them."""

    grace: Annotated[Interval, AfterValidator(_fits_the_stop_timeout)] = 10.0


class NotifierConfig(_Section):
    """A named destination that rules send alerts to (`to: [name]`)."""

    type: Literal["alertmanager", "pagerduty", "slack", "webhook", "email"]
    url: str | None = None
    url_file: str | None = None
    routing_key_file: str | None = None


class ConfigModel(_Section):
    """The whole file, as written."""

    rules: list[str] = Field(default_factory=lambda: ["rules/"])
    http: HttpConfig = Field(default_factory=HttpConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    seeweb: SeewebConfig | None = None
    k8sgpu: K8sGpuConfig | None = None
    glesys: GlesysConfig | None = None
    poll: PollConfig = Field(default_factory=PollConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    notifiers: dict[str, NotifierConfig] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded configuration: the model, plus paths and secrets resolved against its file."""

    path: Path
    model: ConfigModel
    rule_paths: tuple[Path, ...]
    state_path: Path
    secrets: Mapping[str, Secret]

    def secret(self, key: str) -> Secret:
        """Return the secret read for a `*_file` key such as `seeweb.token_file`."""
        return self.secrets[key]


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and resolve a config file, or raise ConfigError naming file, key and reason."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_reason(exc)}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        problems = sorted(
            (_describe(path, text, error) for error in exc.errors()), key=_line_number
        )
        raise ConfigError("\n".join(problems)) from None
    base = path.parent
    secrets = {
        key: _read_secret(path, text, key, name, base, environ)
        for key, name in _secret_files(model)
    }
    return Config(
        path=path,
        model=model,
        rule_paths=tuple(_resolve(base, entry) for entry in model.rules),
        state_path=_resolve(base, model.state.path),
        secrets=secrets,
    )


def _resolve(base: Path, entry: str) -> Path:
    candidate = Path(entry).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _secret_files(model: ConfigModel) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    sections: Sequence[tuple[str, BaseModel | None]] = [
        ("seeweb", model.seeweb),
        ("k8sgpu", model.k8sgpu),
        ("glesys", model.glesys),
        *((f"notifiers.{name}", notifier) for name, notifier in model.notifiers.items()),
    ]
    for prefix, section in sections:
        if section is None:
            continue
        for field_name, value in section:
            if field_name.endswith("_file") and isinstance(value, str):
                found.append((f"{prefix}.{field_name}", value))
    return found


def _read_secret(
    config: Path, text: str, key: str, name: str, base: Path, environ: Mapping[str, str]
) -> Secret:
    # systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; relative names look there.
    directory = environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = (Path(directory) if directory else base) / candidate
    where = _where(config, text, key)
    try:
        if candidate.stat().st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{where}: {key}: {candidate} is larger than 64 KiB")
        value = candidate.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: {key}: cannot read {candidate}: {_reason(exc)}") from None
    if not value:
        raise ConfigError(f"{where}: {key}: {candidate} is empty")
    return Secret(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)


def _describe(path: Path, text: str, error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing":
        reason = "required"
    else:
        reason = str(error["msg"]).removeprefix("Value error, ")
    return f"{_where(path, text, key)}: {key or '(top level)'}: {reason}"


def _line_number(problem: str) -> int:
    _, _, rest = problem.partition(":")
    number = rest.partition(":")[0]
    return int(number) if number.isdigit() else 0


_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(?:#.*)?$")


def _where(path: Path, text: str, key: str) -> str:
    """Return `file:line` for a dotted key when the line can be found, else `file`."""
    section, _, leaf = key.rpartition(".")
    current = ""
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1).replace('"', "").replace(" ", "")
            if current == key:
                header_line = number
            continue
        if current == section and re.match(rf"^\s*\"?{re.escape(leaf)}\"?\s*=", line):
            return f"{path}:{number}"
    if header_line is not None:
        return f"{path}:{header_line}"
    if section:
        return _where(path, text, section) if "." in key else str(path)
    return str(path)
