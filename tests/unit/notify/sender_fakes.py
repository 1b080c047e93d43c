"""Test doubles for the sender tests: notifications, a recording receiver and a resolver."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from daemon.clock import FakeClock
from daemon.config import NotifierConfig
from daemon.notifications import AlertStatus, Notification, Sender, Severity
from daemon.notify.alertmanager import AlertmanagerSender
from daemon.notify.outbound import SafeHttp
from daemon.notify.pagerduty import PagerDutySender
from daemon.notify.slack import SlackSender
from daemon.notify.webhook import WebhookSender
from daemon.secret import Secret

STARTED = datetime(2026, 11, 1, 11, 50, tzinfo=UTC)
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ENDED = datetime(2026, 11, 1, 11, 58, tzinfo=UTC)


def make_notification(
    status: AlertStatus = AlertStatus.FIRING,
    *,
    severity: Severity = Severity.CRITICAL,
    summary: str = "ec200001 failed to power off",
    description: str = "Action 709 (power_off) ended in error.",
    resource: str = "ec200001",
    event: Mapping[str, Any] | None = None,
) -> Notification:
    """Return a notification of a failed action, firing or resolved."""
    return Notification(
        alert_key="failed-action/ec200001",
        dedup_key="cloudpilot/failed-action/ec200001",
        rule="failed-action",
        status=status,
        severity=severity,
        summary=summary,
        description=description,
        resource=resource,
        labels={"alertname": "failed-action", "severity": severity.value, "resource": resource},
        started_at=STARTED,
        ended_at=ENDED if status is AlertStatus.RESOLVED else None,
        event=dict(
            event
            if event is not None
            else {
                "type": "seeweb.action.failed",
                "key": "seeweb.action:709:failed",
                "time": "2026-11-01T11:49:00+00:00",
                "resource": resource,
                "data": {"id": 709, "type": "power_off"},
            }
        ),
    )


def make_clock() -> FakeClock:
    """Return a fake clock at NOW."""
    return FakeClock(NOW)


def notifier(kind: str, **keys: Any) -> NotifierConfig:
    """Return a validated `[notifiers.NAME]` section of this type."""
    return NotifierConfig.model_validate({"type": kind, **keys})


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server that records each POST and answers as the test says."""

    port: int = 0
    status: int = 200
    text: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    echo: bool = False
    requests: list[Received] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/") -> str:
        """Return an http URL to this receiver on 127.0.0.1."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request, then answer (or, when hanging, wait until released)."""
        body = await request.read()
        self.requests.append(Received(request.path_qs, dict(request.headers), body))
        if self.hang:
            await self._release.wait()
        text = f"{request.path_qs} {dict(request.headers)} {body!r}" if self.echo else self.text
        return web.Response(status=self.status, text=text, headers=self.headers)

    def release(self) -> None:
        """Let hanging requests finish."""
        self._release.set()


@contextlib.asynccontextmanager
async def receiver(**answer: Any) -> AsyncIterator[Receiver]:
    """Serve a Receiver on 127.0.0.1 for the test's duration."""
    recorder = Receiver(**answer)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("POST", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    recorder.port = server.port
    try:
        yield recorder
    finally:
        recorder.release()
        await server.close()


class FakeResolver(AbstractResolver):
    """A resolver answering from a table."""

    def __init__(self, table: Mapping[str, list[str]]) -> None:
        self._table = dict(table)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the table's addresses for `host`, or raise OSError."""
        if host not in self._table:
            raise OSError(f"{host} does not resolve")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self._table[host]
        ]

    async def close(self) -> None:
        """Nothing to close."""


ROUTING_KEY = "R0UT1NG-KEY-0123456789abcdef0123"
HMAC_SECRET = "whsec-0123456789"
HTTP_KINDS = ("alertmanager", "pagerduty", "slack", "webhook")


def http_sender(
    kind: str,
    url: str,
    *,
    http: SafeHttp,
    clock: FakeClock,
    timeout: float = 10.0,
    routing_key: str = ROUTING_KEY,
    hmac_secret: str = HMAC_SECRET,
) -> Sender:
    """Return a sender of an HTTP type that posts to `url`, its secrets given in the test."""
    if kind == "alertmanager":
        return AlertmanagerSender(
            "am", notifier(kind, url=url, timeout=timeout), http=http, clock=clock
        )
    if kind == "pagerduty":
        config = notifier(kind, url=url, routing_key_file="key", timeout=timeout)
        return PagerDutySender(
            "pd", config, routing_key=Secret(routing_key), http=http, clock=clock
        )
    if kind == "slack":
        config = notifier(kind, url_file="slack-url", timeout=timeout)
        return SlackSender("chat", config, url=Secret(url), http=http, clock=clock)
    config = notifier(kind, url_file="hook-url", secret_file="hook-secret", timeout=timeout)
    return WebhookSender(
        "hook", config, url=Secret(url), secret=Secret(hmac_secret), http=http, clock=clock
    )


SMTP_USERNAME = "alerts"
SMTP_PASSWORD = "smtp-pa55word"


@dataclass
class Mail:
    """One message the server accepted, and how it arrived."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class MailServer:
    """An aiosmtpd handler that records mail and refuses what the test says."""

    password: str = SMTP_PASSWORD
    auth_answer: str | None = None
    refuse: dict[str, str] = field(default_factory=dict)
    data_answer: str | None = None
    port: int = 0
    mail: list[Mail] = field(default_factory=list)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept the one username and password."""
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USERNAME.encode(),
            self.password.encode(),
        )
        if ok:
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False, message=self.auth_answer)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Refuse the addresses the test named; accept the others."""
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Record the message, or answer as the test said."""
        if self.data_answer is not None:
            return self.data_answer
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert envelope.mail_from is not None
        self.mail.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message,
                tls=session.ssl is not None,
                login=session.login_data,
            )
        )
        return "250 Message accepted"


@dataclass(frozen=True)
class Tls:
    """A server certificate and key, and the certificate as PEM text (the CA to trust)."""

    cert: Path
    key: Path

    def pem(self) -> str:
        """Return the certificate, as `ca_file` would hold it."""
        return self.cert.read_text()


@contextlib.asynccontextmanager
async def mail_server(tls: Tls | None, **behaviour: Any) -> AsyncIterator[MailServer]:
    """Serve SMTP on 127.0.0.1; with `tls`, STARTTLS is required before mail or login."""
    handler = MailServer(**behaviour)
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=context,
            require_starttls=context is not None,
            authenticator=handler.authenticate,
            auth_require_tls=True,
        )

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()
