"""The `webhook` action: POST the decision as JSON to a URL, safely."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, ClassVar

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from pydantic import Field, field_validator
from yarl import URL

from daemon import __version__
from daemon.actions.base import ActionContext, ActionParams, params_as_data
from daemon.actions.urls import UnsafeUrlError, check_url, describe, parse_address, resolve_checked
from daemon.clock import Clock
from daemon.durations import Seconds
from daemon.models import Decision, Outcome, OutcomeStatus

USER_AGENT = f"cloudpilot/{__version__}"

# Headers Cloudpilot sets itself; letting a rule override them would break the payload's
# framing, the receiver's deduplication or the address check (Host).
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "user-agent",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


class WebhookParams(ActionParams):
    """Parameters of `webhook`."""

    url: str = Field(
        description="Where to POST: https, or http to a loopback host; no user:password@."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. a token; their values are never logged.",
    )
    timeout: Seconds = Field(
        default=10.0, gt=0, le=300, description="How long to wait for the answer."
    )

    @field_validator("url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        check_url(value)
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Cloudpilot and cannot be overridden")
            if not _HEADER_VALUE.match(text):
                raise ValueError(f"header {name!r}: the value holds control characters")
        return value

    def redacted(self) -> dict[str, Any]:
        """Return the parameters with header values masked and the URL cut to its origin."""
        data = params_as_data(self)
        data["url"] = describe(URL(self.url))
        if "headers" in data:
            data["headers"] = dict.fromkeys(self.headers, "***")
        return data


def webhook_payload(decision: Decision) -> dict[str, Any]:
    """Return the JSON body a webhook receives for a decision."""
    event = decision.event
    return {
        "rule": decision.rule,
        "decision_key": decision.key,
        "mode": decision.mode.value,
        "time": decision.time.isoformat(),
        "event": None
        if event is None
        else {
            "type": event.type,
            "key": event.key,
            "time": event.time.isoformat(),
            "resource": event.resource,
            "data": dict(event.data),
        },
    }


def _json_default(value: object) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _seconds(value: float) -> str:
    return f"{value:g}"


class WebhookAction:
    """POST the decision to a URL; the decision key goes along as `Idempotency-Key`."""

    name: ClassVar[str] = "webhook"
    params_model: ClassVar[type[ActionParams]] = WebhookParams
    destructive: ClassVar[bool] = False
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._resolver = resolver

    async def run(self, ctx: ActionContext) -> Outcome:
        """Send the decision once; 2xx is done, anything else failed with the reason."""
        params = ctx.params(WebhookParams)
        url = check_url(params.url)
        where = describe(url)
        body = json.dumps(webhook_payload(ctx.decision), default=_json_default)
        headers = {
            **params.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": ctx.decision.key,
            "User-Agent": USER_AGENT,
        }
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(params.timeout):
                status = await self._post(url, body, headers)
        except TimeoutError:
            return self._failed(f"{where}: no answer within {_seconds(params.timeout)} s")
        except UnsafeUrlError as exc:
            return self._failed(f"refused: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(f"{where}: cannot connect ({exc.os_error.strerror or 'error'})")
        except aiohttp.ServerDisconnectedError:
            return self._failed(f"{where}: the receiver closed the connection")
        except aiohttp.ClientError as exc:
            # Only the type: some aiohttp messages quote the full URL, whose path may be a token.
            return self._failed(f"{where}: {type(exc).__name__}")
        except OSError as exc:
            return self._failed(f"{where}: cannot resolve {url.raw_host} ({exc.strerror or exc})")
        ctx.log.debug(
            "webhook_answered",
            target=where,
            status=status,
            took_s=round(self._clock.monotonic() - started, 3),
        )
        if 200 <= status < 300:
            return Outcome(OutcomeStatus.DONE, f"{where}: HTTP {status}")
        if 300 <= status < 400:
            return self._failed(f"{where}: HTTP {status}, a redirect; redirects are not followed")
        if 400 <= status < 500:
            return self._failed(f"{where}: HTTP {status}, rejected by the receiver")
        return self._failed(f"{where}: HTTP {status}, the receiver failed")

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Say the outcome is unknown, so the runner sends again with the same key."""
        return None

    async def _post(self, url: URL, body: str, headers: dict[str, str]) -> int:
        """Connect only to checked addresses and return the answer's status."""
        if self._resolver is None:
            self._resolver = ThreadedResolver()
        addresses = await resolve_checked(url, self._resolver)
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
            request_headers = {**headers, "Host": host_header} if by_name else headers
            try:
                async with self._session.post(
                    target,
                    data=body.encode(),
                    headers=request_headers,
                    allow_redirects=False,
                    server_hostname=host.rstrip(".") if by_name and url.scheme == "https" else None,
                ) as response:
                    return response.status
            except aiohttp.ClientConnectorError as exc:
                # Nothing was sent: the next address of the same host may be tried.
                last_error = exc
        assert last_error is not None
        raise last_error

    @staticmethod
    def _failed(detail: str) -> Outcome:
        return Outcome(OutcomeStatus.FAILED, detail)
