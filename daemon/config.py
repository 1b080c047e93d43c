"""The daemon's TOML configuration: parsed, checked, and with its secrets read from files."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from daemon.durations import Seconds
from daemon.errors import ConfigError
from daemon.net import Listen
from daemon.secret import Secret
from daemon.urls import check_url, describe, is_loopback_host

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


def _provider_url(value: str) -> str:
    """Refuse a provider URL that would send the API credentials in clear, or somewhere unsafe."""
    parsed = check_url(value, allow_http=True)
    if parsed.scheme == "http" and not is_loopback_host(parsed.raw_host or ""):
        raise ValueError(
            f"{describe(parsed)}: plain http would send the API credentials in clear; use "
            "https (http is allowed only to a loopback host, such as the simulator)"
        )
    return value


ProviderUrl = Annotated[str, AfterValidator(_provider_url)]


class Section(BaseModel):
    """A config section: unknown keys are refused, and nothing changes once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0}
_RATE_UNITS["hour"] = 3600.0


def _parse_rate(value: object) -> float:
    """Return requests per second from `20/s`, `300/min`, `1000/h` or a plain number per second."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str) and (match := _RATE.match(value)):
        rate = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        raise ValueError(f"not a rate: {value!r} (write e.g. 20/s or 300/min)")
    if rate <= 0:
        raise ValueError("must be more than 0 requests")
    return rate


Rate = Annotated[float, BeforeValidator(_parse_rate)]


class ProviderLimits(Section):
    """What every provider section takes: how fast and how many at once its API is called.

    One limit per provider, shared by all its sources and actions. The defaults are gentle on a
    small account; a large one raises `rate` (its sweep of N servers takes N / rate seconds).
    """

    rate: Rate = 5.0
    """Requests per second on average (`20/s`, `300/min`)."""
    burst: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Requests that may go at once before the rate applies."""
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    """Requests in flight at once."""


class HttpConfig(Section):
    """Where `/metrics`, `/healthz`, `/readyz` and `/status` are served."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"
    per_server_metrics: bool = True
    """Export series labelled by server; off, only the per-provider totals (large accounts)."""


class StateConfig(Section):
    """Where the durable state lives."""

    path: str = "/var/lib/cloudpilot/state.db"
    dsn: str | None = None
    retention: Interval = 90 * 86400.0
    """How long ended ledger entries and resolved alerts are kept."""

    @field_validator("retention")
    @classmethod
    def _a_month_at_least(cls, value: float) -> float:
        if value < 35 * 86400:
            raise ValueError(
                "must be at least 35d: budgets read the month's decisions from the ledger"
            )
        return value

    @field_validator("dsn")
    @classmethod
    def _no_postgres_yet(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("the PostgreSQL store is not available yet; use path (SQLite)")
        return value


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _parse_size(value: object) -> int:
    """Return a size in bytes from `8MiB`, `512KiB`, `100B` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        return int(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"]
    raise ValueError(f"not a size: {value!r} (write e.g. 8MiB, 512KiB)")


def _at_least_a_kibibyte(value: int) -> int:
    if value < 1024:
        raise ValueError("must be at least 1KiB")
    return value


Size = Annotated[int, BeforeValidator(_parse_size), AfterValidator(_at_least_a_kibibyte)]


class ProvidersConfig(Section):
    """How every provider client treats answers: the largest body, the longest wait asked."""

    max_response: Size = 8 * 1024 * 1024
    max_retry_after: Annotated[Seconds, Field(ge=0)] = 10.0


class PollConfig(Section):
    """How often each source polls, by source name; the keys are the providers' sources."""


class EngineConfig(Section):
    """How the rule engine treats what the sources bring."""

    stale_after: Interval = 3600.0


def _fits_the_stop_timeout(value: float) -> float:
    # The unit's TimeoutStopSec=30s must also cover stopping the polls and closing the store.
    if value > MAX_GRACE_S:
        raise ValueError(f"must be at most {MAX_GRACE_S:g}s, to stop inside systemd's timeout")
    return value


class BudgetConfig(Section):
    """How budgets price what the bills do not show yet."""

    gpu_prices: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description=(
            "EUR per online hour by GPU runtime class, as the GPU bill names it (= 2.2); a class "
            "missing here is priced at what the GPU bill charged it per online hour."
        ),
    )


class ShutdownConfig(Section):
    """How long a stop waits for running actions before cancelling them."""

    grace: Annotated[Interval, AfterValidator(_fits_the_stop_timeout)] = 10.0


NotifierType = Literal["alertmanager", "pagerduty", "slack", "webhook", "email"]

# Sends per second one destination may make, unless `rate` says otherwise.
DEFAULT_RATES: Mapping[str, float] = {
    "alertmanager": 10.0,
    "pagerduty": 2.0,  # PagerDuty accepts about 120 events a minute per routing key
    "slack": 1.0,  # Slack's documented limit for incoming webhooks
    "webhook": 5.0,
    "email": 1.0,
}
MAX_RESEND_S = 60.0
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

# Which keys belong to which type; a key given for another type is a mistake worth naming.
_TYPE_KEYS: Mapping[str, frozenset[str]] = {
    "alertmanager": frozenset({"url", "urls", "resend_every"}),
    "pagerduty": frozenset({"url", "routing_key_file"}),
    "slack": frozenset({"url", "url_file"}),
    "webhook": frozenset({"url", "url_file", "secret_file", "signature_header"}),
    "email": frozenset(
        {
            "host",
            "port",
            "starttls",
            "username",
            "password_file",
            "from_",
            "to",
            "subject_prefix",
            "ca_file",
        }
    ),
}
_COMMON_KEYS = frozenset({"type", "timeout", "rate", "give_up_after"})


class NotifierConfig(Section):
    """A named route that rules send alerts to (`to: [name]`); the keys depend on `type`.

    alertmanager: `url` or `urls` (every URL of an HA pair receives each alert), `resend_every`.
    pagerduty: `routing_key_file`, and `url` only to point at another Events API v2 endpoint.
    slack: `url_file` (the incoming-webhook URL is a secret), or `url`.
    webhook: `url` or `url_file`, and `secret_file` to sign bodies with HMAC-SHA256.
    email: `host`, `port`, `from`, `to`, `username` and `password_file`, and `ca_file` to trust
    a private CA; STARTTLS is required except to a loopback host.
    A literal `url` or `urls` must be https (http only to loopback, or for alertmanager) and
    never a link-local or metadata address; one read from `url_file` is checked when read.
    """

    model_config = ConfigDict(populate_by_name=True)

    type: NotifierType
    url: str | None = None
    urls: list[str] | None = None
    url_file: str | None = None
    routing_key_file: str | None = None
    secret_file: str | None = None
    signature_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "X-Cloudpilot-Signature"
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    username: str | None = None
    password_file: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: list[str] | None = None
    subject_prefix: str = "[cloudpilot]"
    ca_file: str | None = None
    timeout: Annotated[Interval, Field(le=120)] = 10.0
    rate: Annotated[float, Field(gt=0, le=100)] | None = None
    give_up_after: Interval = 86400.0
    resend_every: Annotated[Interval, Field(le=MAX_RESEND_S)] = MAX_RESEND_S

    @field_validator("url")
    @classmethod
    def _safe_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_url(value, allow_http=info.data.get("type") == "alertmanager")
        return value

    @field_validator("urls")
    @classmethod
    def _safe_urls(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        for url in value or ():
            check_url(url, allow_http=info.data.get("type") == "alertmanager")
        return value

    @model_validator(mode="after")
    def _fits_the_type(self) -> NotifierConfig:
        allowed = _TYPE_KEYS[self.type] | _COMMON_KEYS
        stray = sorted(name.rstrip("_") for name in self.model_fields_set if name not in allowed)
        if stray:
            raise ValueError(f"{', '.join(stray)}: not a key of a {self.type} notifier")
        problem = self._missing() or self._unsafe()
        if problem:
            raise ValueError(problem)
        return self

    def _missing(self) -> str | None:
        has_url = self.url is not None or self.url_file is not None
        if self.type == "alertmanager":
            if (self.url is None) == (self.urls is None) or self.urls == []:
                return "an alertmanager notifier needs url or urls (one of them)"
        elif self.type == "pagerduty":
            if self.routing_key_file is None:
                return "a pagerduty notifier needs routing_key_file"
        elif self.type in ("slack", "webhook"):
            if not has_url or (self.url is not None and self.url_file is not None):
                return f"a {self.type} notifier needs url or url_file (one of them)"
        elif self.host is None or self.from_ is None or not self.to:
            return "an email notifier needs host, from and to"
        elif (self.username is None) != (self.password_file is None):
            return "an email notifier needs both username and password_file, or neither"
        return None

    def _unsafe(self) -> str | None:
        if self.type == "email" and not self.starttls and not is_loopback_host(self.host or ""):
            return (
                "starttls = false is allowed only for a loopback host (127.0.0.0/8, ::1,"
                " localhost); mail to another host must use STARTTLS"
            )
        # Headers the webhook notifier sets itself; a signature there would replace them.
        taken = {"content-type", "user-agent", "idempotency-key", "x-cloudpilot-timestamp", "host"}
        if self.type == "webhook" and self.signature_header.lower() in taken:
            return f"signature_header {self.signature_header!r} is a header Cloudpilot sets itself"
        return None

    @property
    def sends_per_s(self) -> float:
        """Return the rate limit per destination: `rate`, or the type's default."""
        return self.rate if self.rate is not None else DEFAULT_RATES[self.type]

    def target_urls(self) -> list[str]:
        """Return the URLs written in the file (not those read from `url_file`)."""
        if self.urls is not None:
            return list(self.urls)
        if self.url is not None:
            return [self.url]
        return [PAGERDUTY_EVENTS_URL] if self.type == "pagerduty" else []


class ConfigModel(Section):
    """The whole file, as written."""

    rules: list[str] = Field(default_factory=lambda: ["rules/"])
    http: HttpConfig = Field(default_factory=HttpConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    notifiers: dict[str, NotifierConfig] = Field(default_factory=dict)

    def provider(self, name: str) -> BaseModel | None:
        """Return a provider's section (`[name]`), or None when the file has none."""
        section = getattr(self, name, None)
        return section if isinstance(section, BaseModel) else None

    def interval(self, source: str) -> float:
        """Return how often a source polls (`[poll] <source>`)."""
        value = getattr(self.poll, source)
        assert isinstance(value, float)
        return value


@dataclass(frozen=True, slots=True)
class ProviderSection:
    """What a provider adds to the config: its section's model, its sources' poll intervals."""

    name: str
    model: type[BaseModel]
    intervals: tuple[tuple[str, float], ...]
    """Its sources' names with their default poll intervals."""


@cache
def config_model(sections: tuple[ProviderSection, ...]) -> type[ConfigModel]:
    """Return the config model with a section per provider and their sources in `[poll]`."""
    poll: dict[str, Any] = {
        source: (Interval, default) for section in sections for source, default in section.intervals
    }
    poll_model = create_model("PollConfig", __base__=PollConfig, **poll)
    fields: dict[str, Any] = {section.name: (section.model | None, None) for section in sections}
    fields["poll"] = (poll_model, Field(default_factory=poll_model))
    return create_model("ConfigModel", __base__=ConfigModel, **fields)


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


def read_config(
    path: Path,
    sections: Sequence[ProviderSection],
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, check and resolve a config file, or raise ConfigError naming file, key and reason.

    `sections` are the providers' (the registry's `load_config` passes them).
    """
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
        model = config_model(tuple(sections)).model_validate(raw)
    except ValidationError as exc:
        problems = sorted(
            (_describe(path, text, error) for error in exc.errors()), key=_line_number
        )
        raise ConfigError("\n".join(problems)) from None
    base = path.parent
    secrets = {
        key: _read_secret(path, text, key, name, base, environ)
        for key, name in _secret_files(model, [section.name for section in sections])
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


def _secret_files(model: ConfigModel, providers: Sequence[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    sections: Sequence[tuple[str, BaseModel | None]] = [
        *((name, model.provider(name)) for name in providers),
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
