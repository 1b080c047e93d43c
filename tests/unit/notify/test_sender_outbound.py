"""The checked POST the notifiers share, Retry-After, and http for internal receivers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from processes import free_port
from sender_fakes import NOW, FakeResolver, receiver
from yarl import URL

from daemon.notifications import Verdict
from daemon.notify.outbound import (
    ANSWER_PREVIEW_BYTES,
    MAX_RETRY_AFTER_S,
    USER_AGENT,
    HttpAnswer,
    SafeHttp,
    failure_detail,
    judge_answer,
    retry_after_s,
)
from daemon.urls import UnsafeUrlError, check_url, resolve_checked


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_post_returns_the_status_headers_and_a_bounded_preview(
    session: aiohttp.ClientSession,
) -> None:
    async with receiver(status=400, text="x" * 5000, headers={"retry-after": "5"}) as hook:
        answer = await SafeHttp(session).post(
            URL(hook.url("/in")), b'{"a":1}', {"Content-Type": "application/json"}
        )
    assert answer.status == 400
    assert answer.headers["Retry-After"] == "5"
    assert answer.body == b"x" * ANSWER_PREVIEW_BYTES
    [request] = hook.requests
    assert (request.path, request.body) == ("/in", b'{"a":1}')


async def test_post_connects_by_the_checked_address_and_keeps_the_host_name(
    session: aiohttp.ClientSession,
) -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    async with receiver() as hook:
        url = URL(f"http://localhost:{hook.port}/in")
        answer = await SafeHttp(session, resolver).post(url, b"{}", {})
    assert answer.status == 200
    assert hook.requests[0].headers["Host"] == f"localhost:{hook.port}"


async def test_post_refuses_a_name_that_resolves_to_the_metadata_address(
    session: aiohttp.ClientSession,
) -> None:
    resolver = FakeResolver({"am.internal": ["169.254.169.254"]})
    with pytest.raises(UnsafeUrlError, match="a cloud metadata address"):
        await SafeHttp(session, resolver).post(
            URL("http://am.internal:9093/api/v2/alerts"), b"[]", {}, allow_http=True
        )


def test_http_to_an_internal_host_needs_allow_http() -> None:
    with pytest.raises(UnsafeUrlError, match="http is allowed only for loopback hosts"):
        check_url("http://10.0.0.5:9093/")
    assert check_url("http://10.0.0.5:9093/", allow_http=True).port == 9093
    assert check_url("http://alertmanager.internal:9093/", allow_http=True).scheme == "http"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/", "a cloud metadata address"),
        ("http://169.254.1.1/", "a link-local address"),
        ("http://metadata.google.internal/", "a cloud metadata service"),
        ("http://user:pw@10.0.0.5/", "a user or password in the URL is not allowed"),
    ],
)
def test_allow_http_still_refuses_metadata_and_credentials(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrlError, match=reason):
        check_url(url, allow_http=True)


async def test_resolved_http_may_leave_the_machine_only_with_allow_http() -> None:
    resolver = FakeResolver({"am.internal": ["10.0.0.5"]})
    url = URL("http://am.internal:9093/")
    with pytest.raises(UnsafeUrlError, match="http needs a loopback host"):
        await resolve_checked(url, resolver)
    assert await resolve_checked(url, resolver, allow_http=True) == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("30", 30.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        (format_datetime(NOW + timedelta(minutes=2), usegmt=True), 120.0),
        (format_datetime(NOW - timedelta(minutes=2), usegmt=True), 0.0),
        ("999999", MAX_RETRY_AFTER_S),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(header: str | None, seconds: float) -> None:
    assert retry_after_s(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "verdict", "detail"),
    [
        (200, Verdict.DELIVERED, "https://r.example: HTTP 200"),
        (422, Verdict.REJECTED, "https://r.example: HTTP 422, rejected by the receiver"),
        (429, Verdict.RETRY, "https://r.example: HTTP 429, rate limited; retry after 7 s"),
        (503, Verdict.RETRY, "https://r.example: HTTP 503, the receiver failed; retry after 7 s"),
        (
            307,
            Verdict.RETRY,
            "https://r.example: HTTP 307, a redirect; redirects are not followed; retry after 7 s",
        ),
    ],
)
def test_an_answer_is_judged_by_its_status(status: int, verdict: Verdict, detail: str) -> None:
    result = judge_answer(HttpAnswer(status, {"Retry-After": "7"}), "https://r.example", NOW)
    assert (result.verdict, result.detail) == (verdict, detail)
    assert result.retry_after_s == (7.0 if verdict is Verdict.RETRY else None)


async def test_failures_name_only_the_origin(session: aiohttp.ClientSession) -> None:
    url = URL(f"http://127.0.0.1:{free_port()}/services/T0K3N")
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await SafeHttp(session).post(url, b"{}", {})
    detail = failure_detail(caught.value, url, 1.0)
    assert detail.startswith(f"http://127.0.0.1:{url.port}: cannot connect (")
    assert "T0K3N" not in detail
    assert failure_detail(TimeoutError(), url, 0.25).endswith(": no answer within 0.25 s")


def test_user_agent_names_cloudpilot() -> None:
    assert USER_AGENT.startswith("cloudpilot/")


@pytest.mark.parametrize(
    "module", ["daemon.notify.outbound", "daemon.notify.senders", "daemon.config"]
)
def test_each_module_imports_first_without_a_cycle(module: str) -> None:
    # Each import starts in a fresh interpreter: the order of first imports is what matters.
    done = subprocess.run(  # noqa: S603  fixed arguments, no shell
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
