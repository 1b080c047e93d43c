"""The email sender against a real SMTP server (aiosmtpd) on 127.0.0.1, with STARTTLS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from processes import free_port
from pydantic import ValidationError
from sender_fakes import (
    SMTP_PASSWORD,
    SMTP_USERNAME,
    Tls,
    mail_server,
    make_clock,
    make_notification,
    notifier,
)
from tls_cert import self_signed_cert

from daemon.notifications import AlertStatus, Severity, Verdict
from daemon.notify.email import EmailSender, message_id, subject
from daemon.secret import Secret

USERNAME = SMTP_USERNAME
PASSWORD = SMTP_PASSWORD
FROM = "Cloudpilot <alerts@example.com>"
TO = ["ops@example.com", "oncall@example.com"]


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    cert, key = self_signed_cert(tmp_path)
    return Tls(cert, key)


def sender(
    port: int,
    *,
    ca: str | None,
    password: str | None = PASSWORD,
    timeout: float = 10.0,
    **keys: Any,
) -> EmailSender:
    login = {"username": USERNAME, "password_file": "pw"} if password is not None else {}
    config = notifier(
        "email",
        host="127.0.0.1",
        port=port,
        to=TO,
        timeout=timeout,
        **{"from": FROM, **login, **keys},
    )
    return EmailSender(
        "mail",
        config,
        password=Secret(password) if password is not None else None,
        ca=Secret(ca) if ca is not None else None,
        clock=make_clock(),
    )


async def test_a_firing_alert_is_mailed_over_starttls_after_login(tls: Tls) -> None:
    async with mail_server(tls) as server:
        result = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert result.verdict is Verdict.DELIVERED, result.detail
    assert result.detail == f"smtp 127.0.0.1:{server.port}: accepted for 2 recipient(s)"
    [mail] = server.mail
    assert (mail.tls, mail.login) == (True, USERNAME.encode())
    assert (mail.sender, mail.recipients) == ("alerts@example.com", TO)
    message = mail.message
    assert message["Subject"] == "[cloudpilot] [CRITICAL] ec200001 failed to power off"
    assert message["From"] == FROM
    assert message["To"] == ", ".join(TO)
    assert message["Date"] == "Sun, 01 Nov 2026 12:00:00 +0000"
    assert message["Message-ID"] == message_id(
        make_notification(), AlertStatus.FIRING, "example.com"
    )
    assert message["In-Reply-To"] is None
    text = message.get_content().replace("\r\n", "\n")
    assert text.startswith("ec200001 failed to power off\n\nAction 709 (power_off) ended in error.")
    for line in (
        "Status:   firing",
        "Severity: critical",
        "Resource: ec200001",
        "Rule:     failed-action",
        "Started:  2026-11-01T11:50:00+00:00",
        "Alert:    failed-action/ec200001",
        "  alertname: failed-action",
    ):
        assert line in text.splitlines()


async def test_the_resolved_message_threads_under_the_firing_one(tls: Tls) -> None:
    async with mail_server(tls) as server:
        route = sender(server.port, ca=tls.pem(), subject_prefix="[prod]")
        await route.send("mail", make_notification())
        await route.send("mail", make_notification())
        await route.send("mail", make_notification(AlertStatus.RESOLVED))
    first, retried, resolved = (mail.message for mail in server.mail)
    assert first["Message-ID"] == retried["Message-ID"]
    assert resolved["Subject"] == "[prod] [RESOLVED] ec200001 failed to power off"
    assert resolved["Message-ID"] != first["Message-ID"]
    assert resolved["In-Reply-To"] == first["Message-ID"]
    assert resolved["References"] == first["Message-ID"]
    assert "Ended:    2026-11-01T11:58:00+00:00" in resolved.get_content().splitlines()


def test_the_subject_is_one_line_with_the_severity() -> None:
    notification = make_notification(severity=Severity.WARNING, summary="disk\nfull  on\tec1")
    assert subject(notification, "[cloudpilot]") == "[cloudpilot] [WARNING] disk full on ec1"


@pytest.mark.parametrize(
    ("refuse", "verdict"),
    [
        ({address: "550 5.1.1 no such user" for address in TO}, Verdict.REJECTED),
        ({address: "450 4.2.1 mailbox busy" for address in TO}, Verdict.RETRY),
        ({TO[0]: "550 5.1.1 no such user", TO[1]: "450 4.2.1 busy"}, Verdict.RETRY),
    ],
)
async def test_refused_recipients_decide_the_verdict(
    tls: Tls, refuse: dict[str, str], verdict: Verdict
) -> None:
    async with mail_server(tls, refuse=refuse) as server:
        result = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert result.verdict is verdict
    expected = "; ".join(f"{address}: {refuse[address]}" for address in sorted(refuse))
    assert result.detail == f"smtp 127.0.0.1:{server.port}: every recipient refused: {expected}"


async def test_mail_accepted_for_some_recipients_is_delivered(tls: Tls) -> None:
    async with mail_server(tls, refuse={TO[1]: "550 5.1.1 no such user"}) as server:
        result = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert result.verdict is Verdict.DELIVERED
    assert result.detail.endswith(
        "accepted, but refused for oncall@example.com: 550 5.1.1 no such user"
    )
    assert [mail.recipients for mail in server.mail] == [[TO[0]]]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("554 5.6.0 message refused", Verdict.REJECTED), ("451 4.3.0 try later", Verdict.RETRY)],
)
async def test_refused_data_decides_the_verdict(tls: Tls, answer: str, verdict: Verdict) -> None:
    async with mail_server(tls, data_answer=answer) as server:
        result = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert result.verdict is verdict
    assert result.detail == f"smtp 127.0.0.1:{server.port}: message refused: {answer}"


async def test_a_wrong_password_is_retried_until_it_is_fixed(tls: Tls) -> None:
    async with mail_server(tls) as server:
        wrong = await sender(server.port, ca=tls.pem(), password="old-pa55").send(
            "mail", make_notification()
        )
        fixed = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert wrong.verdict is Verdict.RETRY
    assert wrong.detail == (
        f"smtp 127.0.0.1:{server.port}: login refused (535); check username and password_file"
    )
    assert fixed.verdict is Verdict.DELIVERED
    assert len(server.mail) == 1


async def test_a_server_without_starttls_is_not_sent_to(tls: Tls) -> None:
    async with mail_server(None) as server:
        result = await sender(server.port, ca=tls.pem()).send("mail", make_notification())
    assert result.verdict is Verdict.RETRY
    assert "STARTTLS" in result.detail
    assert server.mail == []


async def test_an_untrusted_certificate_is_refused(tls: Tls) -> None:
    async with mail_server(tls) as server:
        result = await sender(server.port, ca=None).send("mail", make_notification())
    assert result.verdict is Verdict.RETRY
    assert "certificate" in result.detail.lower()
    assert server.mail == []


async def test_plain_smtp_is_allowed_to_a_loopback_relay() -> None:
    async with mail_server(None) as server:
        route = sender(server.port, ca=None, password=None, starttls=False)
        result = await route.send("mail", make_notification())
    assert result.verdict is Verdict.DELIVERED, result.detail
    assert [(mail.tls, mail.login) for mail in server.mail] == [(False, None)]


def test_plain_smtp_to_another_host_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="starttls = false is allowed only for a loopback"):
        notifier("email", host="smtp.example.com", to=TO, starttls=False, **{"from": FROM})


async def test_a_refused_connection_is_retried() -> None:
    port = free_port()
    result = await sender(port, ca=None).send("mail", make_notification())
    assert result.verdict is Verdict.RETRY
    assert result.detail.startswith(f"smtp 127.0.0.1:{port}: Error connecting to 127.0.0.1")


async def test_a_server_that_never_greets_is_retried_after_the_timeout() -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # A bound on a real socket wait, not a sleep: the server never says hello.
        result = await sender(port, ca=None, timeout=0.05).send("mail", make_notification())
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert result.verdict is Verdict.RETRY
    assert result.detail == f"smtp 127.0.0.1:{port}: no answer within 0.05 s"


async def test_a_destination_the_route_does_not_own_is_rejected() -> None:
    route = sender(free_port(), ca=None)
    result = await route.send("other", make_notification())
    assert result.verdict is Verdict.REJECTED
    assert (route.destinations, route.kind, route.rate_per_s) == (("mail",), "email", 1.0)
