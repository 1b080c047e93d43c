"""The Slack sender against a real receiver on 127.0.0.1: blocks, limits and Slack's answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sender_fakes import http_sender, make_clock, make_notification, receiver

from daemon.notifications import AlertStatus, Notification, SendResult, Verdict
from daemon.notify.outbound import USER_AGENT, SafeHttp
from daemon.notify.slack import FIELD_LIMIT, HEADER_LIMIT, SECTION_LIMIT, slack_message

HOOK_PATH = "/services/T000/B000/XXXXXXXX"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def send(
    session: aiohttp.ClientSession, notification: Notification, **answer: Any
) -> tuple[SendResult, list[dict[str, Any]], int]:
    """Send to a Slack stand-in; return the result, the bodies it got, and its port."""
    async with receiver(**answer) as slack:
        sender = http_sender(
            "slack", slack.url(HOOK_PATH), http=SafeHttp(session), clock=make_clock()
        )
        result = await sender.send("chat", notification)
    assert all(request.path == HOOK_PATH for request in slack.requests)
    assert all(request.headers["User-Agent"] == USER_AGENT for request in slack.requests)
    return result, [request.json() for request in slack.requests], slack.port


async def test_a_firing_alert_is_posted_as_blocks(session: aiohttp.ClientSession) -> None:
    result, [body], port = await send(session, make_notification())
    assert result.verdict is Verdict.DELIVERED
    assert result.detail == f"http://127.0.0.1:{port}: HTTP 200"
    assert body == {
        "text": "[FIRING · CRITICAL] ec200001: ec200001 failed to power off",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": "FIRING · CRITICAL: ec200001 failed to power off",
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Resource*\nec200001"},
                    {"type": "mrkdwn", "text": "*Rule*\nfailed-action"},
                    {"type": "mrkdwn", "text": "*Started*\n2026-11-01T11:50:00+00:00"},
                ],
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        "*ec200001 failed to power off*\nAction 709 (power_off) ended in error."
                    ),
                },
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": ":red_circle: alert `failed-action/ec200001`"}
                ],
            },
        ],
    }


async def test_a_resolved_alert_says_resolved(session: aiohttp.ClientSession) -> None:
    _, [body], _ = await send(session, make_notification(AlertStatus.RESOLVED))
    assert body["text"].startswith("[RESOLVED · CRITICAL] ")
    assert body["blocks"][0]["text"]["text"].startswith("RESOLVED · CRITICAL: ")
    assert {"type": "mrkdwn", "text": "*Ended*\n2026-11-01T11:58:00+00:00"} in body["blocks"][1][
        "fields"
    ]
    assert body["blocks"][3]["elements"][0]["text"].startswith(":white_check_mark: ")


def test_texts_cannot_mention_or_link() -> None:
    message = slack_message(make_notification(summary="<!channel> & <https://evil|click>"))
    happened = message["blocks"][2]["text"]["text"]
    assert happened.startswith("*&lt;!channel&gt; &amp; &lt;https://evil|click&gt;*")
    assert "<" not in message["text"]


def test_long_texts_are_cut_to_slacks_limits() -> None:
    notification = make_notification(
        summary="s" * 2000, description="<" * 5000, resource="r" * 3000
    )
    message = slack_message(notification)
    header, fields, happened, context = message["blocks"]
    assert len(header["text"]["text"]) == HEADER_LIMIT
    assert all(len(field["text"]) <= FIELD_LIMIT for field in fields["fields"])
    assert len(happened["text"]["text"]) <= SECTION_LIMIT
    assert happened["text"]["text"].endswith("&lt;…")
    assert len(message["text"]) <= SECTION_LIMIT
    assert len(context["elements"][0]["text"]) <= FIELD_LIMIT


@pytest.mark.parametrize(
    ("status", "text", "verdict", "reason"),
    [
        (400, "invalid_payload", Verdict.REJECTED, "HTTP 400 (invalid_payload), rejected"),
        (403, "invalid_token", Verdict.RETRY, "HTTP 403 (invalid_token), not accepted"),
        (404, "channel_not_found", Verdict.REJECTED, "HTTP 404 (channel_not_found), rejected"),
        (410, "channel_is_archived", Verdict.REJECTED, "HTTP 410 (channel_is_archived), rejected"),
        (500, "rollup_error", Verdict.RETRY, "HTTP 500 (rollup_error), the receiver failed"),
        (400, "<html>Bad Request</html>", Verdict.REJECTED, "HTTP 400, rejected"),
    ],
)
async def test_slacks_answers_decide_and_name_the_error(
    session: aiohttp.ClientSession, status: int, text: str, verdict: Verdict, reason: str
) -> None:
    result, _, port = await send(session, make_notification(), status=status, text=text)
    assert result.verdict is verdict
    assert result.detail.startswith(f"http://127.0.0.1:{port}: {reason}")


async def test_rate_limited_posts_are_retried_after_slacks_wait(
    session: aiohttp.ClientSession,
) -> None:
    result, _, port = await send(
        session, make_notification(), status=429, text="rate_limited", headers={"Retry-After": "2"}
    )
    assert result.verdict is Verdict.RETRY
    assert result.retry_after_s == 2.0
    assert result.detail == (
        f"http://127.0.0.1:{port}: HTTP 429 (rate_limited), rate limited; retry after 2 s"
    )


async def test_the_error_word_is_dropped_when_it_is_part_of_the_url(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver(status=404, text="services") as slack:
        sender = http_sender(
            "slack", slack.url(HOOK_PATH), http=SafeHttp(session), clock=make_clock()
        )
        result = await sender.send("chat", make_notification())
    assert result.detail == f"http://127.0.0.1:{slack.port}: HTTP 404, rejected by the receiver"
