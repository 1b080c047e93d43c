"""The Alertmanager sender against real receivers on 127.0.0.1: API v2 alerts, HA pairs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import ValidationError
from sender_fakes import make_clock, make_notification, notifier, receiver

from daemon.notifications import AlertStatus, Severity, Verdict
from daemon.notify.alertmanager import AlertmanagerSender, alerts_url
from daemon.notify.outbound import USER_AGENT, SafeHttp


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def sender(session: aiohttp.ClientSession, route: str = "am", **keys: object) -> AlertmanagerSender:
    return AlertmanagerSender(
        route, notifier("alertmanager", **keys), http=SafeHttp(session), clock=make_clock()
    )


async def test_a_firing_alert_is_posted_with_an_end_four_refreshes_ahead(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver() as am:
        route = sender(session, url=am.url(), resend_every="30s")
        result = await route.send("am", make_notification())
    assert result.verdict is Verdict.DELIVERED
    assert result.detail == f"http://127.0.0.1:{am.port}: HTTP 200"
    [request] = am.requests
    assert request.path == "/api/v2/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.json() == [
        {
            "labels": {
                "alertname": "failed-action",
                "severity": "critical",
                "resource": "ec200001",
            },
            "annotations": {
                "summary": "ec200001 failed to power off",
                "description": "Action 709 (power_off) ended in error.",
            },
            "startsAt": "2026-11-01T11:50:00Z",
            "endsAt": "2026-11-01T12:02:00Z",  # now (12:00) + 4 x 30 s
        }
    ]


async def test_a_resolved_alert_ends_when_it_ended_and_omits_an_empty_description(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver() as am:
        resolved = make_notification(AlertStatus.RESOLVED, description="")
        result = await sender(session, url=am.url()).send("am", resolved)
    assert result.verdict is Verdict.DELIVERED
    [alert] = am.requests[0].json()
    assert alert["annotations"] == {"summary": "ec200001 failed to power off"}
    assert alert["startsAt"] == "2026-11-01T11:50:00Z"
    assert alert["endsAt"] == "2026-11-01T11:58:00Z"


async def test_post_alerts_sends_many_alerts_in_one_request(
    session: aiohttp.ClientSession,
) -> None:
    batch = [make_notification(resource=f"ec20000{n}", severity=Severity.WARNING) for n in range(3)]
    async with receiver() as am:
        result = await sender(session, url=am.url()).post_alerts("am", batch)
    assert result.verdict is Verdict.DELIVERED
    [request] = am.requests
    assert [alert["labels"]["resource"] for alert in request.json()] == [
        "ec200000",
        "ec200001",
        "ec200002",
    ]


async def test_an_empty_refresh_sends_nothing(session: aiohttp.ClientSession) -> None:
    async with receiver() as am:
        result = await sender(session, url=am.url()).post_alerts("am", [])
    assert result.verdict is Verdict.DELIVERED
    assert am.requests == []


async def test_every_url_of_an_ha_pair_is_its_own_destination(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver() as first, receiver(status=503) as second:
        route = sender(session, urls=[first.url(), second.url()])
        assert route.destinations == ("am#0", "am#1")
        to_first = await route.send("am#0", make_notification())
        to_second = await route.send("am#1", make_notification())
    assert to_first.verdict is Verdict.DELIVERED
    assert to_second.verdict is Verdict.RETRY
    assert to_second.detail == f"http://127.0.0.1:{second.port}: HTTP 503, the receiver failed"
    assert len(first.requests) == len(second.requests) == 1


async def test_one_url_in_a_list_is_the_route_itself(session: aiohttp.ClientSession) -> None:
    assert sender(session, urls=["http://127.0.0.1:9093"]).destinations == ("am",)


async def test_a_destination_the_route_no_longer_has_is_rejected(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver() as am:
        result = await sender(session, url=am.url()).send("am#2", make_notification())
    assert result.verdict is Verdict.REJECTED
    assert result.detail == "am#2: not a destination of route 'am' any more"
    assert am.requests == []


async def test_a_bad_request_is_rejected(session: aiohttp.ClientSession) -> None:
    async with receiver(status=400, text="start time must be before end time") as am:
        result = await sender(session, url=am.url()).send("am", make_notification())
    assert result.verdict is Verdict.REJECTED
    assert result.detail == f"http://127.0.0.1:{am.port}: HTTP 400, rejected by the receiver"


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("http://am.internal:9093", "http://am.internal:9093/api/v2/alerts"),
        ("http://am.internal:9093/", "http://am.internal:9093/api/v2/alerts"),
        ("https://ops.example/alertmanager/", "https://ops.example/alertmanager/api/v2/alerts"),
        ("https://ops.example/api/v2/alerts", "https://ops.example/api/v2/alerts"),
    ],
)
def test_the_alerts_endpoint_sits_under_the_configured_url(base: str, endpoint: str) -> None:
    assert str(alerts_url(base)) == endpoint


def test_plain_http_to_an_internal_alertmanager_is_allowed() -> None:
    config = notifier("alertmanager", urls=["http://10.0.0.5:9093", "http://am-2.internal:9093"])
    assert config.target_urls() == ["http://10.0.0.5:9093", "http://am-2.internal:9093"]


@pytest.mark.parametrize(
    "keys",
    [
        {"url": "http://169.254.169.254/"},
        {"urls": ["http://10.0.0.5:9093", "http://[fe80::1]:9093"]},
    ],
)
def test_metadata_and_link_local_alertmanagers_are_refused(keys: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="address"):
        notifier("alertmanager", **keys)


async def test_the_repr_names_the_route_and_its_origins(session: aiohttp.ClientSession) -> None:
    route = sender(session, urls=["http://10.0.0.5:9093/a", "https://am.example/b"])
    assert repr(route) == (
        "AlertmanagerSender(route='am', target='http://10.0.0.5:9093, https://am.example')"
    )
    assert (route.kind, route.rate_per_s, route.timeout_s) == ("alertmanager", 10.0, 10.0)
