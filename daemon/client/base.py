"""The HTTP core every provider client shares: URLs, auth, timeouts, retries, rate limit, parsing.

A client subclasses `HttpProvider`, names its API (`name`, `api_prefix`), picks an authenticator
and writes one small method per endpoint. Everything about *how* a call is made lives here, once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, BeforeValidator, model_validator
from yarl import URL

from daemon.client.errors import (
    AuthError,
    BadResponseError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderTimeout,
    ProviderUnreachable,
    RateLimitedError,
    RequestRejected,
    ServerError,
)
from daemon.client.records import ItemProblem, Record, RecordError, parse_record, raw_ids
from daemon.clock import Clock
from daemon.retry import backoff_delay, parse_retry_after
from daemon.secret import Secret

RecordT = TypeVar("RecordT", bound=BaseModel)

#: Called once per attempt as (provider, endpoint template, "200" | "timeout" | "error", seconds).
RequestObserver = Callable[[str, str, str, float], None]
#: Hears how long a request waited for the client-side rate limit: (provider, seconds).
WaitObserver = Callable[[str, float], None]
#: Called for each list item an answer held that did not parse, as (provider, endpoint, problem).
#: The endpoint is `METHOD template`, e.g. `GET /ecs/v2/servers`.
ProblemObserver = Callable[[str, str, ItemProblem], None]

# Each unreadable item is logged as a warning the first time, then only counted; this bounds the
# memory of which were logged (a provider sending thousands of bad items starts over).
_MAX_REMEMBERED_PROBLEMS = 10_000

_RETRY_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Statuses where the API guarantees the request was not carried out, so even a mutating call may
# be sent again. A 500/502/504 or a timeout can arrive *after* the work was accepted: resending a
# POST then could create a second server or snapshot. Those errors surface to the runner, which
# reconciles against the real state (idempotency keys, action lookups) instead of guessing here.
_NOTHING_HAPPENED_STATUSES = frozenset({429, 503})


class RequestLog(Protocol):
    """The part of a structlog logger the clients use."""

    def debug(self, event: str, **kw: Any) -> Any:
        """Log a debug event."""

    def info(self, event: str, **kw: Any) -> Any:
        """Log an info event."""

    def warning(self, event: str, **kw: Any) -> Any:
        """Log a warning event."""


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str) and value:
        return Secret(value)
    raise ValueError("missing or invalid token")


#: A token field in a login answer, wrapped as a Secret the moment it is parsed.
SecretToken = Annotated[Secret, BeforeValidator(_to_secret)]


class Listing(Record):
    """A page of a listing under `items_key`; `listed` counts the items the answer held.

    Unreadable items are left out of the parsed list (see `EachItem`), so a short parsed page
    need not be the last one: paging goes by `listed`.
    """

    items_key: ClassVar[str]
    listed: int = 0
    ids: tuple[int | None, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get(cls.items_key), list):
            items = data[cls.items_key]
            return {**data, "listed": len(items), "ids": raw_ids(items)}
        return data


class Envelope(Record):
    """An answer holding one object under `key`, which some endpoints send bare instead."""

    key: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _accept_bare(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get(cls.key), dict):
            return data
        return {cls.key: data}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a client talks to its provider: timeouts, retries, rate limit and concurrency."""

    total_timeout: float = 30.0
    connect_timeout: float = 10.0
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    max_retry_after: float = 10.0
    max_body_bytes: int = 8 * 1024 * 1024
    requests_per_second: float | None = 5.0
    burst: int = 10
    max_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.total_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be greater than 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.max_retry_after < 0:
            raise ValueError("backoff_base, backoff_cap and max_retry_after must not be negative")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be greater than 0, or None for no limit")
        if self.burst < 1 or self.max_concurrency < 1:
            raise ValueError("burst and max_concurrency must be at least 1")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")

    def timeout(self) -> aiohttp.ClientTimeout:
        """Return the per-call timeout (never aiohttp's 5-minute default)."""
        return aiohttp.ClientTimeout(total=self.total_timeout, connect=self.connect_timeout)


class TokenBucket:
    """A client-side rate limit: `rate` requests per second on average, `burst` at once."""

    def __init__(self, rate: float | None, burst: int, clock: Clock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.monotonic()
        # One waiter at a time keeps the order fair and the arithmetic simple.
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait, on the injected clock, until a request may be sent; return the seconds waited."""
        if self._rate is None:
            return 0.0
        started = self._clock.monotonic()
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await self._clock.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens = max(0.0, self._tokens - 1.0)
        return self._clock.monotonic() - started

    def _refill(self) -> None:
        assert self._rate is not None
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now


class Authenticator(Protocol):
    """Supplies credentials for requests and renews them when the provider says 401."""

    async def headers(self) -> dict[str, str]:
        """Return the headers that authenticate a request."""
        ...

    async def renew(self, rejected: Mapping[str, str]) -> bool:
        """Get fresh credentials after `rejected` got a 401; return whether to retry."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """A long-lived key sent in a header (Seeweb's `X-APITOKEN`)."""

    header: str
    key: Secret

    async def headers(self) -> dict[str, str]:
        """Return the key header."""
        return {self.header: self.key.reveal()}

    async def renew(self, rejected: Mapping[str, str]) -> bool:
        """Refuse: a rejected long-lived key stays rejected."""
        return False


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic credentials (Glesys: project and API key)."""

    username: str
    password: Secret

    async def headers(self) -> dict[str, str]:
        """Return the Basic authorization header."""
        pair = f"{self.username}:{self.password.reveal()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    async def renew(self, rejected: Mapping[str, str]) -> bool:
        """Refuse: fixed credentials cannot be renewed."""
        return False


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A bearer token from a login and how many seconds it lives."""

    token: Secret
    lifetime: float


class JwtAuth:
    """A bearer token from a login call, renewed before it expires and once after a 401."""

    def __init__(
        self,
        login: Callable[[], Awaitable[IssuedToken]],
        clock: Clock,
        *,
        refresh_fraction: float = 0.9,
        min_lifetime: float = 30.0,
    ) -> None:
        if not 0 < refresh_fraction <= 1:
            raise ValueError("refresh_fraction must be in (0, 1]")
        self._login = login
        self._clock = clock
        self._refresh_fraction = refresh_fraction
        # A token whose expiry lies in our past (clock skew) still gets a short life, so that a
        # skewed clock cannot turn every request into a login.
        self._min_lifetime = min_lifetime
        self._token: Secret | None = None
        self._refresh_at = 0.0
        # Concurrent callers share one login instead of racing to start their own.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "JwtAuth()"

    async def headers(self) -> dict[str, str]:
        """Return the bearer header, logging in first when the token is missing or ageing."""
        if self._stale():
            async with self._lock:
                if self._stale():
                    await self._log_in()
        return self._bearer()

    async def renew(self, rejected: Mapping[str, str]) -> bool:
        """Log in again, unless another caller already replaced the rejected token."""
        async with self._lock:
            if self._token is None or rejected.get("Authorization") == self._bearer().get(
                "Authorization"
            ):
                await self._log_in()
        return True

    def _stale(self) -> bool:
        return self._token is None or self._clock.monotonic() >= self._refresh_at

    def _bearer(self) -> dict[str, str]:
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    async def _log_in(self) -> None:
        started = self._clock.monotonic()
        issued = await self._login()
        lifetime = max(issued.lifetime, self._min_lifetime)
        self._token = issued.token
        self._refresh_at = started + lifetime * self._refresh_fraction


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer to one call: the status and the raw body."""

    method: str
    endpoint: str
    path: str
    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One logical call: the method, the endpoint template and the path it filled in."""

    method: str
    endpoint: str
    path: str


def _size_text(size: int) -> str:
    """Return a byte count as people write it: `8 MiB`, `512 KiB`, `100 bytes`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size:,} bytes"


def _provider_message(body: bytes, status: int | None = None) -> str:
    """Return the short reason a provider gave in an error body, if any.

    ECS errors come as `{"error_code", "status", "message"}`: a code other than the HTTP status
    is kept after the message.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        # Glesys: {"response": {"status": {"code": 400, "text": "..."}}}
        status = data["response"].get("status")
        data = {"message": status.get("text")} if isinstance(status, dict) else {}
    if isinstance(data, dict):
        code = data.get("error_code")
        extra = f" (error_code {code})" if isinstance(code, int | str) and code != status else ""
        for key in ("message", "error", "detail", "msg"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                text = " ".join(value.split())
                return (text if len(text) <= 200 else text[:200] + "...") + extra
    return ""


class HttpProvider:
    """One provider API over a shared session: auth, timeouts, retries, limits and parsing."""

    name: ClassVar[str] = "http"
    api_prefix: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: What an operator should check when the provider refuses the credentials (401/403).
    auth_hint: ClassVar[str] = ""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        clock: Clock,
        auth: Authenticator | None = None,
        settings: ClientSettings | None = None,
        rng: random.Random | None = None,
        logger: RequestLog | None = None,
        observer: RequestObserver | None = None,
        on_problem: ProblemObserver | None = None,
        on_wait: WaitObserver | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        if self.api_prefix and root.endswith(self.api_prefix):
            root = root[: -len(self.api_prefix)]
        self._root = root
        self._session = session
        self._clock = clock
        self._auth = auth
        self._settings = settings or ClientSettings()
        self._timeout = self._settings.timeout()
        self._rng = rng or random.Random()
        self._log = logger
        self._observer = observer
        self._on_problem = on_problem
        self._on_wait = on_wait
        self._problems_logged: set[tuple[str, str, str]] = set()
        self._bucket = TokenBucket(self._settings.requests_per_second, self._settings.burst, clock)
        self._slots = asyncio.Semaphore(self._settings.max_concurrency)

    def __repr__(self) -> str:
        shown = URL(self._root).with_user(None).with_password(None)
        return f"{type(self).__name__}(base_url={str(shown)!r}, auth={type(self._auth).__name__})"

    @property
    def settings(self) -> ClientSettings:
        """Return the settings this client was built with."""
        return self._settings

    # --- hooks -----------------------------------------------------------------------------------

    async def _auth_headers(self) -> dict[str, str]:
        """Return the headers that authenticate a request."""
        return await self._auth.headers() if self._auth is not None else {}

    async def _renew_auth(self, rejected: Mapping[str, str]) -> bool:
        """Renew credentials after a 401; return whether the call should be sent again."""
        return await self._auth.renew(rejected) if self._auth is not None else False

    # --- calls -----------------------------------------------------------------------------------

    async def fetch(
        self,
        kind: type[RecordT],
        method: str,
        endpoint: str,
        *,
        path: Mapping[str, str | int] | None = None,
        params: Mapping[str, str | int | None] | None = None,
        body: Mapping[str, object] | None = None,
        retry_safe: bool | None = None,
        authenticate: bool = True,
        show_input: bool = True,
    ) -> RecordT:
        """Call an endpoint and parse its JSON answer as `kind`."""
        reply = await self.request(
            method,
            endpoint,
            path=path,
            params=params,
            body=body,
            retry_safe=retry_safe,
            authenticate=authenticate,
        )
        data = self.decode_json(reply)
        self.check_answer(data, reply)
        return self.parse(kind, data, reply, show_input=show_input)

    def check_answer(self, data: Any, reply: Reply) -> None:
        """Raise when a 2xx answer's body says the call failed; the default trusts the status."""

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        path: Mapping[str, str | int] | None = None,
        params: Mapping[str, str | int | None] | None = None,
        body: Mapping[str, object] | None = None,
        accept: str = "application/json",
        retry_safe: bool | None = None,
        authenticate: bool = True,
    ) -> Reply:
        """Send one logical call with auth, limits and retries; return the 2xx reply or raise."""
        # `endpoint` is the low-cardinality template (`/servers/{name}`) that logs and metrics
        # see; `path` fills it in. `retry_safe` overrides the method's default, for reads sent
        # as POST (login, available regions).
        method = method.upper()
        concrete = self.api_prefix + endpoint.format_map(
            {key: quote(str(value), safe="") for key, value in (path or {}).items()}
        )
        call = Call(method, endpoint, concrete)
        safe = method in _RETRY_SAFE_METHODS if retry_safe is None else retry_safe
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            headers = {"Accept": accept}
            credentials = await self._auth_headers() if authenticate else {}
            headers.update(credentials)
            retry_after: float | None = None
            try:
                reply = await self._attempt(call, headers, query, body)
            except TimeoutError:
                error: ProviderError = ProviderTimeout(
                    self.name,
                    method,
                    concrete,
                    f"no answer within {self._settings.total_timeout:g} s",
                )
                retryable = safe
            except aiohttp.ClientError as exc:
                error = ProviderUnreachable(
                    self.name,
                    method,
                    concrete,
                    f"connection failed ({_describe_client_error(exc)})",
                )
                retryable = safe
            else:
                if 200 <= reply.status < 300:
                    return reply
                if reply.status == 401 and authenticate and not renewed:
                    renewed = True
                    if await self._renew_auth(credentials):
                        attempt -= 1  # the one re-login retry does not use the backoff budget
                        continue
                error, retryable, retry_after = self._classify(call, reply, safe)
            if retry_after is not None and retry_after > self._settings.max_retry_after:
                raise error from None
            if not retryable or attempt >= self._settings.max_attempts:
                raise error from None
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if self._log is not None:
                self._log.info(
                    "provider_retry",
                    provider=self.name,
                    method=method,
                    endpoint=endpoint,
                    reason=error.detail,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                )
            await self._clock.sleep(delay)

    async def _attempt(
        self,
        call: Call,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: Mapping[str, object] | None,
    ) -> Reply:
        # A connection first, then the rate's turn: a request sent the moment its turn comes
        # keeps the rate as the provider sees it (the other way round, turns taken while all
        # connections were busy would all go at once when they freed).
        async with self._slots:
            waited = await self._bucket.acquire()
            if waited > 0 and self._on_wait is not None:
                self._on_wait(self.name, waited)
            started = self._clock.monotonic()
            outcome: str | None = "error"
            try:
                async with self._session.request(
                    call.method,
                    self._root + call.path,
                    headers=headers,
                    params=query or None,
                    json=body,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as response:
                    outcome = str(response.status)
                    data = await self._read_body(call, response)
                    return Reply(
                        method=call.method,
                        endpoint=call.endpoint,
                        path=call.path,
                        status=response.status,
                        body=data,
                        content_type=response.content_type,
                        retry_after=response.headers.get("Retry-After"),
                    )
            except TimeoutError:
                outcome = "timeout"
                raise
            except asyncio.CancelledError:
                outcome = None
                raise
            finally:
                if outcome is not None:
                    self._observe(call, outcome, self._clock.monotonic() - started)

    async def _read_body(self, call: Call, response: aiohttp.ClientResponse) -> bytes:
        """Return the body, or raise BadResponseError once it passes `max_body_bytes`.

        The limit counts the body as decoded (a gzip answer is counted unzipped), and a body
        announced too big by Content-Length is refused before any of it is read.
        """
        limit = self._settings.max_body_bytes
        announced = response.content_length
        if announced is None or announced <= limit:
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    break
            else:
                return bytes(data)
        raise BadResponseError(
            self.name,
            call.method,
            call.path,
            f"answer larger than {_size_text(limit)} (HTTP {response.status}); "
            "[providers] max_response sets the limit",
        )

    def _observe(self, call: Call, outcome: str, seconds: float) -> None:
        if self._log is not None:
            self._log.debug(
                "provider_request",
                provider=self.name,
                method=call.method,
                endpoint=call.endpoint,
                status=outcome,
                duration_s=round(seconds, 6),
            )
        if self._observer is not None:
            self._observer(self.name, call.endpoint, outcome, seconds)

    def _classify(
        self, call: Call, reply: Reply, retry_safe: bool
    ) -> tuple[ProviderError, bool, float | None]:
        """Return the error a non-2xx reply means, whether to retry, and any Retry-After."""
        status = reply.status
        reason = _provider_message(reply.body, status)
        detail = f"HTTP {status}" + (f": {reason}" if reason else "")
        where = (self.name, call.method, call.path)
        if status in (401, 403):
            hint = f"; {self.auth_hint}" if self.auth_hint else ""
            return AuthError(*where, f"credentials refused ({detail}){hint}"), False, None
        if status == 404:
            return NotFoundError(*where, f"not found ({detail})"), False, None
        if status == 409:
            return ConflictError(*where, f"conflict ({detail})", status=status), False, None
        retry_after = None
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(reply.retry_after, self._clock.now())
        if status == 429:
            error: ProviderError = RateLimitedError(
                *where, f"rate limited ({detail})", retry_after=retry_after
            )
            return error, True, retry_after
        if status >= 500:
            error = ServerError(
                *where, f"server error ({detail})", status=status, retry_after=retry_after
            )
            return error, retry_safe or status in _NOTHING_HAPPENED_STATUSES, retry_after
        if 400 <= status < 500:
            return RequestRejected(*where, f"rejected ({detail})", status=status), False, None
        return BadResponseError(*where, f"unexpected status {status}"), False, None

    def _backoff(self, attempt: int) -> float:
        """Return the wait after the given failed attempt: capped exponential, equal jitter."""
        settings = self._settings
        return backoff_delay(
            attempt, first=settings.backoff_base, cap=settings.backoff_cap, rng=self._rng
        )

    # --- decoding --------------------------------------------------------------------------------

    def decode_json(self, reply: Reply) -> Any:
        """Return the reply's JSON, or raise BadResponseError naming the endpoint."""
        try:
            return json.loads(reply.body)
        except UnicodeDecodeError:
            detail = "body is not UTF-8"
        except json.JSONDecodeError as exc:
            detail = f"invalid JSON at byte {exc.pos} of {len(reply.body)}: {exc.msg}"
        raise BadResponseError(self.name, reply.method, reply.path, detail) from None

    def decode_body(self, reply: Reply) -> Any:
        """Return the reply's JSON, or None when it is not JSON (an error page, say)."""
        try:
            return json.loads(reply.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    def decode_text(self, reply: Reply) -> str:
        """Return the reply's body as text, or raise BadResponseError naming the endpoint."""
        try:
            return reply.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadResponseError(
                self.name, reply.method, reply.path, "body is not UTF-8"
            ) from None

    def parse(
        self, kind: type[RecordT], data: Any, reply: Reply, *, show_input: bool = True
    ) -> RecordT:
        """Validate `data` as `kind`, or raise BadResponseError naming the endpoint and field.

        List items that do not fit are left out and reported (`report_problem`); the rest of the
        answer is still used.
        """
        problems: list[ItemProblem] = []
        try:
            parsed = parse_record(kind, data, show_input=show_input, problems=problems)
        except RecordError as exc:
            raise BadResponseError(self.name, reply.method, reply.path, str(exc)) from None
        for problem in problems:
            self.report_problem(f"{reply.method} {self.api_prefix}{reply.endpoint}", problem)
        return parsed

    def report_problem(self, endpoint: str, problem: ItemProblem) -> None:
        """Count an unreadable item; log it as a warning the first time it is seen."""
        if self._on_problem is not None:
            self._on_problem(self.name, endpoint, problem)
        if self._log is None:
            return
        cause = (endpoint, problem.field, problem.item)
        first = cause not in self._problems_logged
        if first:
            if len(self._problems_logged) >= _MAX_REMEMBERED_PROBLEMS:
                self._problems_logged.clear()
            self._problems_logged.add(cause)
        (self._log.warning if first else self._log.debug)(
            "provider_item_unreadable",
            provider=self.name,
            endpoint=endpoint,
            field=problem.field,
            item=problem.item,
            error=problem.message,
            kept="the other items of the answer",
        )


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """Name a transport error without echoing URLs or headers that could carry credentials."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error.strerror or exc.os_error}"
    return type(exc).__name__
