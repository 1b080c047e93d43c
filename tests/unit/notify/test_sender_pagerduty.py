"""The PagerDuty sender against a real receiver on 127.0.0.1: Events API v2 bodies and limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sender_fakes import ROUTING_KEY, http_sender, make_clock, make_notification, notifier, receiver

from daemon.config import PAGERDUTY_EVENTS_URL
from daemon.notifications import AlertStatus, Notification, SendResult, Severity, Verdict
from daemon.notify.outbound import SafeHttp
from daemon.notify.pagerduty import BODY_LIMIT_BYTES, PagerDutySender
from daemon.secret import Secret


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def send(
    session: aiohttp.ClientSession, notification: Notification, **answer: Any
) -> tuple[SendResult, list[Any], int]:
    """Send to a PagerDuty stand-in; return the result, the bodies it got, and its port."""
    async with receiver(**{"status": 202, **answer}) as pd:
        sender = http_sender(
            "pagerduty", pd.url("/v2/enqueue"), http=SafeHttp(session), clock=make_clock()
        )
        result = await sender.send("pd", notification)
    return result, [request.json() for request in pd.requests], pd.port


async def test_a_firing_alert_triggers_with_its_dedup_key(session: aiohttp.ClientSession) -> None:
    result, [body], port = await send(session, make_notification(severity=Severity.WARNING))
    assert result.verdict is Verdict.DELIVERED
    assert result.detail == f"http://127.0.0.1:{port}: HTTP 202"
    assert body == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "cloudpilot/failed-action/ec200001",
        "payload": {
            "summary": "ec200001 failed to power off",
            "source": "ec200001",
            "severity": "warning",
            "timestamp": "2026-11-01T11:50:00Z",
            "component": "seeweb.action.failed",
            "class": "failed-action",
            "custom_details": {
                "description": "Action 709 (power_off) ended in error.",
                "labels": {
                    "alertname": "failed-action",
                    "severity": "warning",
                    "resource": "ec200001",
                },
                "event": {
                    "type": "seeweb.action.failed",
                    "key": "seeweb.action:709:failed",
                    "time": "2026-11-01T11:49:00+00:00",
                    "resource": "ec200001",
                    "data": {"id": 709, "type": "power_off"},
                },
            },
        },
        "client": "Cloudpilot",
    }


async def test_a_resolved_alert_resolves_by_the_same_dedup_key(
    session: aiohttp.ClientSession,
) -> None:
    result, [body], _ = await send(session, make_notification(AlertStatus.RESOLVED))
    assert result.verdict is Verdict.DELIVERED
    assert body == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "cloudpilot/failed-action/ec200001",
    }


async def test_source_defaults_to_cloudpilot_and_the_summary_is_cut(
    session: aiohttp.ClientSession,
) -> None:
    notification = make_notification(resource="", summary="s" * 5000, event={})
    _, [body], _ = await send(session, notification)
    payload = body["payload"]
    assert payload["source"] == "cloudpilot"
    assert payload["summary"] == "s" * 1024
    assert "component" not in payload


async def test_huge_event_data_is_cut_first(session: aiohttp.ClientSession) -> None:
    event = {"type": "log.line", "key": "k", "resource": "ec200001", "data": {"log": "x" * 900_000}}
    notification = make_notification(event=event)
    result, [body], _ = await send(session, notification)
    assert result.verdict is Verdict.DELIVERED
    details = body["payload"]["custom_details"]
    assert details["description"] == notification.description
    assert details["event"]["type"] == "log.line"
    assert details["event"]["data"] == (
        "(cut: the event's data took 900010 bytes, over PagerDuty's 512 KB limit)"
    )
    assert len(json.dumps(body).encode()) <= BODY_LIMIT_BYTES


async def test_a_huge_event_outside_its_data_is_cut_whole(session: aiohttp.ClientSession) -> None:
    event = {"type": "log.line", "key": "k" * 900_000, "data": {}}
    _, [body], _ = await send(session, make_notification(event=event))
    details = body["payload"]["custom_details"]
    assert details["event"].startswith("(cut: the event took ")
    assert details["description"] == "Action 709 (power_off) ended in error."


async def test_a_huge_description_is_cut_after_the_event(session: aiohttp.ClientSession) -> None:
    notification = make_notification(
        description="d" * 700_000, event={"type": "t", "data": {"blob": "x" * 700_000}}
    )
    result, [body], _ = await send(session, notification)
    assert result.verdict is Verdict.DELIVERED
    details = body["payload"]["custom_details"]
    assert details["event"].startswith("(cut: the event took ")
    assert details["description"] == "d" * 1024 + " … (cut)"
    assert details["labels"]["alertname"] == "failed-action"


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(202, Verdict.DELIVERED), (400, Verdict.REJECTED), (429, Verdict.RETRY), (500, Verdict.RETRY)],
)
async def test_answers_decide_the_verdict(
    session: aiohttp.ClientSession, status: int, verdict: Verdict
) -> None:
    result, _, _ = await send(
        session,
        make_notification(),
        status=status,
        text='{"status":"invalid event","message":"Event object is invalid"}',
        headers={"Retry-After": "30"} if status == 429 else {},
    )
    assert result.verdict is verdict
    assert result.retry_after_s == (30.0 if status == 429 else None)


async def test_the_default_endpoint_is_pagerduty(session: aiohttp.ClientSession) -> None:
    config = notifier("pagerduty", routing_key_file="key")
    sender = PagerDutySender(
        "pd", config, routing_key=Secret(ROUTING_KEY), http=SafeHttp(session), clock=make_clock()
    )
    assert config.target_urls() == [PAGERDUTY_EVENTS_URL]
    assert sender.target() == "https://events.pagerduty.com"
    assert (sender.destinations, sender.rate_per_s) == (("pd",), 2.0)
