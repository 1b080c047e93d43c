"""Every HTTP sender reads answers the same way: 2xx delivered, a wrong request rejected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from processes import free_port
from sender_fakes import (
    HTTP_KINDS,
    NOW,
    http_sender,
    make_clock,
    make_notification,
    receiver,
)

from daemon.notifications import Verdict
from daemon.notify.outbound import SafeHttp


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (400, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
async def test_status_decides_the_verdict(
    session: aiohttp.ClientSession, kind: str, status: int, verdict: Verdict
) -> None:
    async with receiver(status=status, text="") as target:
        sender = http_sender(kind, target.url("/in"), http=SafeHttp(session), clock=make_clock())
        result = await sender.send(sender.destinations[0], make_notification())
    assert result.verdict is verdict
    assert result.detail.startswith(f"http://127.0.0.1:{target.port}: HTTP {status}")
    assert result.retry_after_s is None
    assert len(target.requests) == 1


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    ("status", "retry_after", "seconds"),
    [
        (429, "12", 12.0),
        (503, format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ],
)
async def test_retry_after_is_passed_on(
    session: aiohttp.ClientSession, kind: str, status: int, retry_after: str, seconds: float
) -> None:
    async with receiver(status=status, headers={"Retry-After": retry_after}) as target:
        sender = http_sender(kind, target.url("/in"), http=SafeHttp(session), clock=make_clock())
        result = await sender.send(sender.destinations[0], make_notification())
    assert result.verdict is Verdict.RETRY
    assert result.retry_after_s == seconds


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_no_answer_within_the_timeout_is_retried(
    session: aiohttp.ClientSession, kind: str
) -> None:
    async with receiver(hang=True) as target:
        # A bound on a real socket wait, not a sleep: the receiver never answers.
        sender = http_sender(
            kind, target.url("/in"), http=SafeHttp(session), clock=make_clock(), timeout=0.05
        )
        result = await sender.send(sender.destinations[0], make_notification())
        assert len(target.requests) == 1
    assert result.verdict is Verdict.RETRY
    assert result.detail == f"http://127.0.0.1:{target.port}: no answer within 0.05 s"


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_refused_connection_is_retried(session: aiohttp.ClientSession, kind: str) -> None:
    port = free_port()
    sender = http_sender(
        kind, f"http://127.0.0.1:{port}/in", http=SafeHttp(session), clock=make_clock()
    )
    result = await sender.send(sender.destinations[0], make_notification())
    assert result.verdict is Verdict.RETRY
    assert result.detail.startswith(f"http://127.0.0.1:{port}: cannot connect (")
