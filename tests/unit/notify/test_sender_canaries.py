"""No secret ever shows: canaries in every credential, sends made to fail in every way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from processes import free_port
from sender_fakes import (
    SMTP_USERNAME,
    FakeResolver,
    Tls,
    http_sender,
    mail_server,
    make_clock,
    make_notification,
    notifier,
    receiver,
)
from tls_cert import self_signed_cert

from daemon.notifications import AlertStatus, Notification, Sender, SendResult, Verdict
from daemon.notify.email import EmailSender
from daemon.notify.outbound import SafeHttp
from daemon.secret import Secret

CANARY = "CaNaRy7f3e9a"
# Slack's error words are lowercase: a lowercase canary must not pass for one.
LOWER_CANARY = "canary_in_the_path"
ROUTING_KEY = f"rk-{CANARY}"
HMAC_SECRET = f"whsec-{CANARY}"
SMTP_PASSWORD = f"pw-{CANARY}"
PATHS = {
    "alertmanager": f"/am/{CANARY}",
    "pagerduty": f"/v2/enqueue/{CANARY}",
    "slack": f"/services/T0/B0/{CANARY}/{LOWER_CANARY}",
    "webhook": f"/hooks/{CANARY}",
}
HTTP_KINDS = tuple(PATHS)

Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[tuple[Sender, SendResult]]]


def assert_no_canary(*texts: object) -> None:
    for text in texts:
        shown = repr(text).lower()
        assert CANARY.lower() not in shown, shown
        assert LOWER_CANARY not in shown, shown


def make_sender(
    kind: str, url: str, session: aiohttp.ClientSession, *, timeout: float = 10.0, **http: object
) -> Sender:
    resolver = http.get("resolver")
    assert resolver is None or isinstance(resolver, FakeResolver)
    return http_sender(
        kind,
        url,
        http=SafeHttp(session, resolver),
        clock=make_clock(),
        timeout=timeout,
        routing_key=ROUTING_KEY,
        hmac_secret=HMAC_SECRET,
    )


async def send_both(sender: Sender) -> list[SendResult]:
    destination = sender.destinations[0]
    return [
        await sender.send(destination, make_notification()),
        await sender.send(destination, make_notification(AlertStatus.RESOLVED)),
    ]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("status", [302, 400, 401, 404, 410, 422, 429, 500, 503])
async def test_answers_that_echo_the_request_leak_nothing(
    session: aiohttp.ClientSession, kind: str, status: int
) -> None:
    location = {"Location": f"/elsewhere/{CANARY}", "Retry-After": "1"}
    async with receiver(status=status, echo=True, headers=location) as target:
        sender = make_sender(kind, target.url(PATHS[kind]), session)
        results = await send_both(sender)
    assert all(result.verdict is not Verdict.DELIVERED for result in results)
    assert_no_canary(sender, *results, *(result.detail for result in results))


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_slack_style_lowercase_echo_leaks_nothing(
    session: aiohttp.ClientSession, kind: str
) -> None:
    async with receiver(status=400, text=LOWER_CANARY) as target:
        sender = make_sender(kind, target.url(PATHS[kind]), session)
        results = await send_both(sender)
    assert_no_canary(sender, *results)


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_silence_refusal_and_bad_names_leak_nothing(
    session: aiohttp.ClientSession, kind: str
) -> None:
    results: list[SendResult] = []
    async with receiver(hang=True) as silent:
        sender = make_sender(kind, silent.url(PATHS[kind]), session, timeout=0.05)
        results += await send_both(sender)
    refused = make_sender(kind, f"http://127.0.0.1:{free_port()}{PATHS[kind]}", session)
    results += await send_both(refused)
    resolver = FakeResolver({"metadata.test": ["169.254.169.254"], "rebind.test": ["fe80::1"]})
    for host in ("metadata.test", "rebind.test", "unknown.test"):
        named = make_sender(kind, f"https://{host}{PATHS[kind]}", session, resolver=resolver)
        results += await send_both(named)
    assert all(result.verdict is Verdict.RETRY for result in results)
    assert_no_canary(*results)


@contextlib.asynccontextmanager
async def hanging_up(*, read_first: bool) -> AsyncIterator[int]:
    """Serve a port that hangs up on each connection, after reading a little if told to."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read_first:
            await reader.read(64)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_dropped_connection_leaks_nothing(
    session: aiohttp.ClientSession, kind: str, scheme: str
) -> None:
    async with hanging_up(read_first=True) as port:
        sender = make_sender(kind, f"{scheme}://127.0.0.1:{port}{PATHS[kind]}", session)
        results = await send_both(sender)
    assert all(result.verdict is Verdict.RETRY for result in results)
    assert_no_canary(*results)


def email_sender(port: int, *, ca: str | None, timeout: float = 10.0) -> EmailSender:
    config = notifier(
        "email",
        host="127.0.0.1",
        port=port,
        to=["ops@example.com"],
        username=SMTP_USERNAME,
        password_file="pw",
        timeout=timeout,
        **{"from": "alerts@example.com"},
    )
    return EmailSender(
        "mail",
        config,
        password=Secret(SMTP_PASSWORD),
        ca=Secret(ca) if ca is not None else None,
        clock=make_clock(),
    )


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    cert, key = self_signed_cert(tmp_path)
    return Tls(cert, key)


async def test_smtp_failures_leak_no_password(tls: Tls) -> None:
    results: list[SendResult] = []
    notification: Notification = make_notification()
    # The server quotes the password back in its refusal of the login.
    async with mail_server(
        tls, password="other", auth_answer=f"535 5.7.8 {SMTP_PASSWORD} is wrong"
    ) as server:
        results.append(await email_sender(server.port, ca=tls.pem()).send("mail", notification))
    async with mail_server(
        tls, password=SMTP_PASSWORD, refuse={"ops@example.com": "550 no"}
    ) as server:
        results.append(await email_sender(server.port, ca=tls.pem()).send("mail", notification))
    async with mail_server(tls, password=SMTP_PASSWORD, data_answer="554 refused") as server:
        results.append(await email_sender(server.port, ca=tls.pem()).send("mail", notification))
    async with mail_server(tls) as server:
        results.append(await email_sender(server.port, ca=None).send("mail", notification))
    async with mail_server(None) as server:
        results.append(await email_sender(server.port, ca=tls.pem()).send("mail", notification))
    async with hanging_up(read_first=False) as port:
        results.append(await email_sender(port, ca=tls.pem()).send("mail", notification))
    results.append(await email_sender(free_port(), ca=None).send("mail", notification))
    assert [result.verdict for result in results] == [
        Verdict.RETRY,
        Verdict.REJECTED,
        Verdict.REJECTED,
        Verdict.RETRY,
        Verdict.RETRY,
        Verdict.RETRY,
        Verdict.RETRY,
    ]
    assert_no_canary(email_sender(25, ca=None), *results)
    assert "login refused (535)" in results[0].detail
