"""The `webhook` action: POST the decision as JSON to a URL, safely."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

import aiohttp
from aiohttp.abc import AbstractResolver
from pydantic import Field, field_validator
from yarl import URL

from daemon import __version__
from daemon.clock import Clock
from daemon.models import Decision, Outcome, OutcomeStatus
from daemon.notify import outbound
from daemon.rules.action import ActionContext, ActionParams, params_as_data
from daemon.rules.schema import Duration
from daemon.urls import check_url, describe

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
    timeout: Annotated[Duration, Field(le=300)] = Field(
        default=10.0, description="How long to wait for the answer (at most 5m)."
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
        self._http = outbound.SafeHttp(session, resolver)
        self._clock = clock

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
                answer = await self._http.post(url, body.encode(), headers)
        except outbound.POST_ERRORS as exc:
            return self._failed(outbound.failure_detail(exc, url, params.timeout))
        status = answer.status
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

    @staticmethod
    def _failed(detail: str) -> Outcome:
        return Outcome(OutcomeStatus.FAILED, detail)
