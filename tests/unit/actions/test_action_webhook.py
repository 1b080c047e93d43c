"""The webhook action against a real in-process receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from action_fakes import (
    FakeResolver,
    capture_logger,
    make_decision,
)
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import LogCapture
from tls_cert import self_signed_cert

from daemon import __version__
from daemon.actions.webhook import WebhookAction, WebhookParams, webhook_payload
from daemon.clock import FakeClock
from daemon.models import Decision, Mode, OutcomeStatus
from daemon.rules.action import ActionContext

SECRET = "s3cr3t-token-value"
PATH_SECRET = "T0K3N-in-path"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@contextlib.asynccontextmanager
async def receiver(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 and yield its port."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


def context(decision: Decision) -> tuple[ActionContext, LogCapture]:
    log, capture = capture_logger()
    return ActionContext(decision=decision, clock=FakeClock(), log=log, timeout_s=30.0), capture


def webhook(session: aiohttp.ClientSession, resolver: FakeResolver | None = None) -> WebhookAction:
    return WebhookAction(session=session, clock=FakeClock(), resolver=resolver)


def hook_decision(url: str, **params: Any) -> Decision:
    return make_decision(
        "page/0/seeweb.action:709:failed", action="webhook", params={"url": url, **params}
    )


async def test_delivers_the_decision_as_json_with_its_idempotency_key(
    session: aiohttp.ClientSession,
) -> None:
    received: list[tuple[dict[str, str], Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(f"/hooks/{PATH_SECRET}", hook)
    async with receiver(app) as port:
        url = f"http://127.0.0.1:{port}/hooks/{PATH_SECRET}"
        decision = hook_decision(url, headers={"Authorization": f"Bearer {SECRET}"})
        ctx, capture = context(decision)
        outcome = await webhook(session).run(ctx)

    assert outcome.status is OutcomeStatus.DONE
    assert outcome.detail == f"http://127.0.0.1:{port}: HTTP 204"
    [(headers, body)] = received
    assert headers["Idempotency-Key"] == decision.key
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"cloudpilot/{__version__}"
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body == {
        "rule": "r",
        "decision_key": decision.key,
        "mode": "enforce",
        "time": "2026-11-01T12:00:00+00:00",
        "event": {
            "type": "seeweb.action.failed",
            "key": "seeweb.action:709:failed",
            "time": "2026-11-01T11:59:00+00:00",
            "resource": "ec200001",
            "data": {"id": 709, "type": "power_off", "at": "2026-11-01T11:59:00+00:00"},
        },
    }
    assert SECRET not in repr(capture.entries)
    assert PATH_SECRET not in repr(capture.entries) + outcome.detail


async def test_payload_without_an_event_says_null() -> None:
    decision = make_decision(action="webhook")
    bare = Decision(
        key=decision.key,
        rule=decision.rule,
        action="webhook",
        params={},
        mode=Mode.ENFORCE,
        event=None,
        time=decision.time,
    )
    assert webhook_payload(bare)["event"] is None


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (200, "HTTP 200"),
        (404, "HTTP 404, rejected by the receiver"),
        (422, "HTTP 422, rejected by the receiver"),
        (500, "HTTP 500, the receiver failed"),
        (503, "HTTP 503, the receiver failed"),
    ],
)
async def test_status_decides_the_outcome(
    session: aiohttp.ClientSession, status: int, detail: str
) -> None:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=status, text=f"echo {request.headers.get('X-Token')}")

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with receiver(app) as port:
        decision = hook_decision(f"http://127.0.0.1:{port}/hook", headers={"X-Token": SECRET})
        ctx, capture = context(decision)
        outcome = await webhook(session).run(ctx)
    expected = OutcomeStatus.DONE if status < 300 else OutcomeStatus.FAILED
    assert outcome.status is expected
    assert outcome.detail == f"http://127.0.0.1:{port}: {detail}"
    assert SECRET not in repr(capture.entries)


async def test_a_redirect_fails_and_is_not_followed(session: aiohttp.ClientSession) -> None:
    target_hits = 0

    async def hook(request: web.Request) -> web.Response:
        raise web.HTTPFound("/target")

    async def target(request: web.Request) -> web.Response:
        nonlocal target_hits
        target_hits += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_route("*", "/target", target)
    async with receiver(app) as port:
        ctx, _ = context(hook_decision(f"http://127.0.0.1:{port}/hook"))
        outcome = await webhook(session).run(ctx)
    assert outcome.status is OutcomeStatus.FAILED
    assert "HTTP 302, a redirect; redirects are not followed" in outcome.detail
    assert target_hits == 0


async def test_no_answer_within_the_timeout_fails(session: aiohttp.ClientSession) -> None:
    never = asyncio.Event()
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        arrived.set()
        await never.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with receiver(app) as port:
        try:
            # A bound on a real socket wait, not a sleep: the handler never answers.
            ctx, _ = context(hook_decision(f"http://127.0.0.1:{port}/hook", timeout="50ms"))
            outcome = await webhook(session).run(ctx)
            assert arrived.is_set()
        finally:
            never.set()
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail == f"http://127.0.0.1:{port}: no answer within 0.05 s"


async def test_connection_refused_fails_with_the_reason(session: aiohttp.ClientSession) -> None:
    async with receiver(web.Application()) as port:
        pass
    ctx, _ = context(hook_decision(f"http://127.0.0.1:{port}/hook"))
    outcome = await webhook(session).run(ctx)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith(f"http://127.0.0.1:{port}: cannot connect (")


async def test_a_name_is_resolved_once_and_connected_by_the_checked_address(
    session: aiohttp.ClientSession,
) -> None:
    seen_hosts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen_hosts.append(request.host)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/hook", hook)
    # 127.0.0.2 is loopback but nobody listens there: the next checked address is tried.
    resolver = FakeResolver({"localhost": ["127.0.0.2", "127.0.0.1"]})
    async with receiver(app) as port:
        ctx, _ = context(hook_decision(f"http://localhost:{port}/hook"))
        outcome = await webhook(session, resolver).run(ctx)
    assert outcome.status is OutcomeStatus.DONE, outcome.detail
    assert seen_hosts == [f"localhost:{port}"]
    assert resolver.asked == ["localhost"]


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["169.254.169.254"], "resolves to 169.254.169.254, a cloud metadata address"),
        (["169.254.10.1"], "resolves to 169.254.10.1, a link-local address"),
        (["fe80::1"], "resolves to fe80::1, a link-local address"),
        (["fd00:ec2::254"], "resolves to fd00:ec2::254, a cloud metadata address"),
        (["100.100.100.200"], "resolves to 100.100.100.200, a cloud metadata address"),
        (["0.0.0.0"], "resolves to 0.0.0.0, the unspecified address"),  # noqa: S104  a target
        (["239.1.2.3"], "resolves to 239.1.2.3, a multicast address"),
        (["::ffff:169.254.169.254"], "resolves to 169.254.169.254, a cloud metadata address"),
        # One bad answer among good ones taints the name (DNS rebinding).
        (["127.0.0.1", "169.254.169.254"], "resolves to 169.254.169.254"),
    ],
)
async def test_a_name_resolving_to_a_refused_address_is_never_connected(
    addresses: list[str], reason: str
) -> None:
    requests = 0

    async def count(*_: Any) -> None:
        nonlocal requests
        requests += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    resolver = FakeResolver({"hooks.example.test": addresses})
    async with aiohttp.ClientSession(trace_configs=[trace]) as traced:
        ctx, _ = context(hook_decision("https://hooks.example.test/hook"))
        outcome = await webhook(traced, resolver).run(ctx)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith("refused: https://hooks.example.test: hooks.example.test ")
    assert reason in outcome.detail
    assert requests == 0


async def test_http_to_localhost_must_stay_on_loopback(session: aiohttp.ClientSession) -> None:
    resolver = FakeResolver({"localhost": ["10.0.0.5"]})
    ctx, _ = context(hook_decision("http://localhost:9/hook"))
    outcome = await webhook(session, resolver).run(ctx)
    assert outcome.status is OutcomeStatus.FAILED
    assert "resolves to 10.0.0.5, not loopback; http needs a loopback host" in outcome.detail


async def test_an_unknown_name_fails_with_the_reason(session: aiohttp.ClientSession) -> None:
    ctx, _ = context(hook_decision("https://nowhere.example.test/hook"))
    outcome = await webhook(session, FakeResolver({})).run(ctx)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith(
        "https://nowhere.example.test: cannot resolve nowhere.example.test"
    )


async def test_reconcile_leaves_it_to_a_resend(session: aiohttp.ClientSession) -> None:
    ctx, _ = context(hook_decision("https://hooks.example.test/hook"))
    assert await webhook(session).reconcile(ctx) is None


def test_redacted_params_hide_header_values_and_the_url_path() -> None:
    params = WebhookParams.model_validate(
        {
            "url": f"https://hooks.example.com:8443/services/{PATH_SECRET}?k={SECRET}",
            "headers": {"Authorization": SECRET},
        }
    )
    shown = params.redacted()
    assert shown == {
        "url": "https://hooks.example.com:8443",
        "headers": {"Authorization": "***"},
    }
    assert SECRET not in json.dumps(shown)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """Return a self-signed certificate and key for `hooks.test`."""
    return self_signed_cert(tmp_path, "hooks.test", loopback_ip=False)


async def test_https_by_name_connects_to_the_checked_address_and_verifies_the_name(
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    seen: list[tuple[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((request.host, request.headers["Idempotency-Key"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    resolver = FakeResolver({"hooks.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]})
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as tls:
            ctx, _ = context(hook_decision(f"https://hooks.test:{port}/hook"))
            outcome = await webhook(tls, resolver).run(ctx)
            # The same address under a name the certificate does not carry: TLS refuses it.
            wrong_ctx, _ = context(hook_decision(f"https://wrong.test:{port}/hook"))
            wrong = await webhook(tls, resolver).run(wrong_ctx)
    finally:
        await runner.cleanup()
    assert outcome.status is OutcomeStatus.DONE, outcome.detail
    assert seen == [(f"hooks.test:{port}", ctx.decision.key)]
    assert wrong.status is OutcomeStatus.FAILED
    assert wrong.detail.startswith(f"https://wrong.test:{port}: cannot connect"), wrong.detail
    assert "hostname mismatch" in wrong.detail.lower()
