"""The webhook sender against a real receiver on 127.0.0.1: body, keys and the HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import ValidationError
from sender_fakes import (
    HMAC_SECRET,
    NOW,
    FakeResolver,
    http_sender,
    make_clock,
    make_notification,
    notifier,
    receiver,
)

from daemon.notifications import AlertStatus, Verdict
from daemon.notify.outbound import USER_AGENT, SafeHttp
from daemon.notify.webhook import WebhookSender, idempotency_key
from daemon.secret import Secret


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def expected_signature(timestamp: str, body: bytes) -> str:
    """Sign as a receiver would check it, independently of the sender's code."""
    mac = hmac.new(HMAC_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def test_the_notification_is_posted_signed(session: aiohttp.ClientSession) -> None:
    notification = make_notification()
    async with receiver(status=204) as hook:
        sender = http_sender("webhook", hook.url("/in"), http=SafeHttp(session), clock=make_clock())
        result = await sender.send("hook", notification)
    assert result.verdict is Verdict.DELIVERED
    assert result.detail == f"http://127.0.0.1:{hook.port}: HTTP 204"
    [request] = hook.requests
    assert request.json() == {"version": 1, "status": "firing", "alert": notification.as_dict()}
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Idempotency-Key"] == idempotency_key(notification)
    assert headers["X-Cloudpilot-Timestamp"] == str(int(NOW.timestamp()))
    assert headers["X-Cloudpilot-Signature"] == expected_signature(
        headers["X-Cloudpilot-Timestamp"], request.body
    )


def test_the_idempotency_key_is_stable_per_state_change() -> None:
    firing = make_notification()
    assert idempotency_key(firing) == idempotency_key(make_notification())
    assert idempotency_key(firing) != idempotency_key(make_notification(AlertStatus.RESOLVED))
    assert len(idempotency_key(firing)) == 64


async def test_without_a_secret_nothing_is_signed(session: aiohttp.ClientSession) -> None:
    async with receiver() as hook:
        config = notifier("webhook", url=hook.url("/in"))
        sender = WebhookSender(
            "hook",
            config,
            url=Secret(hook.url("/in")),
            secret=None,
            http=SafeHttp(session),
            clock=make_clock(),
        )
        result = await sender.send("hook", make_notification(AlertStatus.RESOLVED))
    assert result.verdict is Verdict.DELIVERED
    [request] = hook.requests
    assert request.json()["status"] == "resolved"
    assert "X-Cloudpilot-Timestamp" not in request.headers
    assert "X-Cloudpilot-Signature" not in request.headers


async def test_the_signature_header_can_be_renamed(session: aiohttp.ClientSession) -> None:
    async with receiver() as hook:
        config = notifier("webhook", url_file="u", secret_file="s", signature_header="X-Hub-Sig")
        sender = WebhookSender(
            "hook",
            config,
            url=Secret(hook.url("/in")),
            secret=Secret(HMAC_SECRET),
            http=SafeHttp(session),
            clock=make_clock(),
        )
        await sender.send("hook", make_notification())
    headers = hook.requests[0].headers
    assert headers["X-Hub-Sig"] == expected_signature(
        headers["X-Cloudpilot-Timestamp"], hook.requests[0].body
    )


async def test_a_redirect_is_retried_and_not_followed(session: aiohttp.ClientSession) -> None:
    async with receiver(status=302, headers={"Location": "/elsewhere"}) as hook:
        sender = http_sender("webhook", hook.url("/in"), http=SafeHttp(session), clock=make_clock())
        result = await sender.send("hook", make_notification())
    assert result.verdict is Verdict.RETRY
    assert result.detail.endswith("HTTP 302, a redirect; redirects are not followed")
    assert [request.path for request in hook.requests] == ["/in"]


async def test_a_name_resolving_to_metadata_is_never_contacted(
    session: aiohttp.ClientSession,
) -> None:
    resolver = FakeResolver({"hooks.example.test": ["169.254.169.254"]})
    sender = http_sender(
        "webhook",
        "https://hooks.example.test/in",
        http=SafeHttp(session, resolver),
        clock=make_clock(),
    )
    result = await sender.send("hook", make_notification())
    assert result.verdict is Verdict.RETRY
    assert result.detail == (
        "refused: https://hooks.example.test: hooks.example.test resolves to 169.254.169.254,"
        " a cloud metadata address"
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"url": "http://hooks.example.com/in"}, "http is allowed only for loopback hosts"),
        ({"url": "https://169.254.169.254/in"}, "a cloud metadata address"),
        (
            {"url": "https://h.example/in", "signature_header": "Idempotency-Key"},
            "is a header Cloudpilot sets itself",
        ),
    ],
)
def test_unsafe_webhook_settings_are_refused(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        notifier("webhook", **keys)
