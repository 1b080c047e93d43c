"""How Cloudpilot reaches out: the checked POST, secret-free failure details, and route basics.

A POST goes only to addresses that passed the check in `daemon.urls` (no link-local or
metadata address, no second DNS answer) and never follows a redirect. What a failure says names
the receiver by its origin alone, since a URL's path or query may be the credential.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from daemon import __version__
from daemon.clock import Clock
from daemon.notifications import SendResult, Verdict, verdict_for_status
from daemon.retry import parse_retry_after
from daemon.urls import UnsafeUrlError, check_url, describe, parse_address, resolve_checked

if TYPE_CHECKING:
    from daemon.config import NotifierConfig

USER_AGENT = f"cloudpilot/{__version__}"
# A receiver's Retry-After is honoured up to this; a longer wait is more likely a bug.
MAX_RETRY_AFTER_S = 3600.0
ANSWER_PREVIEW_BYTES = 1024

#: What a POST may raise when it gets no answer; `failure_detail` says each in words.
POST_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    UnsafeUrlError,
    aiohttp.ClientError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A receiver's answer: its status, its headers (any case) and the first bytes of its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class SafeHttp:
    """POST only to addresses that passed the check, and never follow a redirect."""

    def __init__(
        self, session: aiohttp.ClientSession, resolver: AbstractResolver | None = None
    ) -> None:
        self._session = session
        self._resolver = resolver

    def __repr__(self) -> str:
        return "SafeHttp()"

    async def post(
        self,
        url: URL,
        body: bytes,
        headers: Mapping[str, str],
        *,
        allow_http: bool = False,
    ) -> HttpAnswer:
        """Send `body` to the first checked address that takes a connection; return its answer.

        Raise UnsafeUrlError for a refused URL or address, OSError when the name does not
        resolve, and aiohttp's errors (or TimeoutError) when no answer comes.
        """
        check_url(str(url), allow_http=allow_http)
        if self._resolver is None:
            self._resolver = ThreadedResolver()
        addresses = await resolve_checked(url, self._resolver, allow_http=allow_http)
        host = url.raw_host
        host_header = url.host_port_subcomponent
        assert host is not None
        assert host_header is not None
        by_name = parse_address(host) is None
        last_error: aiohttp.ClientConnectorError | None = None
        for address in addresses:
            # Connect by the checked IP, so no second lookup can answer differently; TLS and
            # the Host header still name the host as written.
            target = url.with_host(address) if by_name else url
            request_headers = {**headers, "Host": host_header} if by_name else dict(headers)
            try:
                async with self._session.post(
                    target,
                    data=body,
                    headers=request_headers,
                    allow_redirects=False,
                    server_hostname=host.rstrip(".") if by_name and url.scheme == "https" else None,
                ) as response:
                    preview = await _read_preview(response.content)
                    headers = CIMultiDictProxy(CIMultiDict(response.headers))
                    return HttpAnswer(response.status, headers, preview)
            except aiohttp.ClientConnectorError as exc:
                # Nothing was sent: the next address of the same host may be tried.
                last_error = exc
        assert last_error is not None
        raise last_error


async def _read_preview(content: aiohttp.StreamReader) -> bytes:
    preview = bytearray()
    while len(preview) < ANSWER_PREVIEW_BYTES:
        chunk = await content.read(ANSWER_PREVIEW_BYTES - len(preview))
        if not chunk:
            break
        preview += chunk
    return bytes(preview)


def failure_detail(exc: BaseException, url: URL, timeout_s: float) -> str:
    """Return why a POST to `url` got no answer, naming only the URL's origin."""
    where = describe(url)
    if isinstance(exc, TimeoutError):
        return f"{where}: no answer within {timeout_s:g} s"
    if isinstance(exc, UnsafeUrlError):
        return f"refused: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{where}: cannot connect ({exc.os_error.strerror or 'error'})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where}: the receiver closed the connection"
    if isinstance(exc, aiohttp.ClientError):
        # Only the type: some aiohttp messages quote the full URL, whose path may be a token.
        return f"{where}: {type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"{where}: cannot resolve {url.raw_host} ({exc.strerror or exc})"
    return f"{where}: {type(exc).__name__}"


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Return the wait a receiver's Retry-After asks for, at most MAX_RETRY_AFTER_S."""
    seconds = parse_retry_after(value, now)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_S)


def judge_answer(answer: HttpAnswer, where: str, now: datetime, reason: str = "") -> SendResult:
    """Return the verdict on an answer, with a detail naming the receiver by `where`."""
    status = answer.status
    said = f" ({reason})" if reason else ""
    verdict = verdict_for_status(status)
    if verdict is Verdict.DELIVERED:
        return SendResult(verdict, f"{where}: HTTP {status}{said}")
    if verdict is Verdict.REJECTED:
        return SendResult(verdict, f"{where}: HTTP {status}{said}, rejected by the receiver")
    wait = retry_after_s(answer.headers.get("Retry-After"), now)
    later = "" if wait is None else f"; retry after {wait:g} s"
    return SendResult(verdict, f"{where}: HTTP {status}{said}, {_why_retry(status)}{later}", wait)


def _why_retry(status: int) -> str:
    if 300 <= status < 400:
        return "a redirect; redirects are not followed"
    if status == 429:
        return "rate limited"
    if status >= 500:
        return "the receiver failed"
    return "not accepted"


def _no_reason(answer: HttpAnswer) -> str:
    return ""


async def post_once(
    http: SafeHttp,
    url: URL,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    clock: Clock,
    allow_http: bool = False,
    explain: Callable[[HttpAnswer], str] = _no_reason,
) -> SendResult:
    """POST `body` once within `timeout_s` and say how it went, in words that hold no secret.

    `explain` may add a short, secret-free reason read from the answer (Slack's error code).
    """
    try:
        async with asyncio.timeout(timeout_s):
            answer = await http.post(url, body, headers, allow_http=allow_http)
    except POST_ERRORS as exc:
        return SendResult(Verdict.RETRY, failure_detail(exc, url, timeout_s))
    except Exception as exc:
        # A sender must not raise: a logged traceback could show this frame's secrets.
        return SendResult(Verdict.RETRY, f"{describe(url)}: unexpected {type(exc).__name__}")
    return judge_answer(answer, describe(url), clock.now(), explain(answer))


def json_body(payload: Any) -> bytes:
    """Return compact UTF-8 JSON; values JSON cannot hold are written as text."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def rfc3339(moment: datetime) -> str:
    """Return the time in UTC as RFC 3339 text ending in Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ConfiguredRoute:
    """What every sender shares: the route's name and type, its rate limit and its timeout."""

    KIND: ClassVar[str]

    def __init__(self, route: str, config: NotifierConfig) -> None:
        if config.type != self.KIND:
            raise ValueError(f"route {route}: a {config.type} notifier, not {self.KIND}")
        self._route = route
        self._config = config

    @property
    def route(self) -> str:
        """Return the route's name."""
        return self._route

    @property
    def kind(self) -> str:
        """Return the notifier type."""
        return self.KIND

    @property
    def destinations(self) -> tuple[str, ...]:
        """Return the outbox destinations this route owns: just the route."""
        return (self._route,)

    @property
    def rate_per_s(self) -> float:
        """Return how many sends per second one destination may make."""
        return self._config.sends_per_s

    @property
    def timeout_s(self) -> float:
        """Return how long one send may take."""
        return self._config.timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(route={self._route!r}, target={self.target()!r})"

    def target(self) -> str:
        """Return where this route sends, safe to show: an origin or a mail host."""
        raise NotImplementedError

    def unknown_destination(self, destination: str) -> SendResult:
        """Return the verdict for a destination this route does not own (the config changed)."""
        return SendResult(
            Verdict.REJECTED,
            f"{destination}: not a destination of route {self._route!r} any more",
        )
