"""The `email` notifier: one plain-text message per notification, over SMTP with STARTTLS.

A message's Message-ID is made from the alert and its state change, so a retried send carries
the same one, and the resolved message names the firing one in In-Reply-To and References, so
mail clients show them as one thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from daemon.clock import Clock
from daemon.config import NotifierConfig
from daemon.notifications import AlertStatus, Notification, SendResult, Verdict
from daemon.notify.outbound import ConfiguredRoute
from daemon.secret import Secret

SUBJECT_SUMMARY_CHARS = 200
SERVER_TEXT_CHARS = 200
FALLBACK_DOMAIN = "cloudpilot.invalid"


def message_id(notification: Notification, status: AlertStatus, domain: str) -> str:
    """Return the Message-ID of this alert's message for `status`; the same on every retry."""
    identity = "\n".join(
        (notification.dedup_key, notification.started_at.isoformat(), status.value)
    )
    # Short enough that the header usually fits on one line, which some clients prefer.
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"<{digest}.{status.value}@{domain}>"


def subject(notification: Notification, prefix: str) -> str:
    """Return `<prefix> [CRITICAL] summary`, or `<prefix> [RESOLVED] summary`, on one line."""
    if notification.status is AlertStatus.RESOLVED:
        tag = "RESOLVED"
    else:
        tag = notification.severity.value.upper()
    summary = " ".join(notification.summary.split())[:SUBJECT_SUMMARY_CHARS]
    return " ".join(f"{prefix} [{tag}] {summary}".split())


def body_text(notification: Notification) -> str:
    """Return the plain-text body: what happened, then the alert's facts and labels."""
    lines = [notification.summary, ""]
    if notification.description:
        lines += [notification.description, ""]
    lines += [
        f"Status:   {notification.status.value}",
        f"Severity: {notification.severity.value}",
        f"Resource: {notification.resource or '-'}",
        f"Rule:     {notification.rule}",
        f"Started:  {notification.started_at.isoformat()}",
    ]
    if notification.ended_at is not None:
        lines.append(f"Ended:    {notification.ended_at.isoformat()}")
    lines += [f"Alert:    {notification.alert_key}", "", "Labels:"]
    lines += [f"  {name}: {value}" for name, value in sorted(notification.labels.items())]
    return "\n".join(lines) + "\n"


def email_message(
    notification: Notification,
    *,
    sender: str,
    recipients: Sequence[str],
    subject_prefix: str,
    now: datetime,
) -> EmailMessage:
    """Return the message for one notification, threaded to the firing one when resolved."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or FALLBACK_DOMAIN
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject(notification, subject_prefix)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(notification, notification.status, domain)
    if notification.status is AlertStatus.RESOLVED:
        firing = message_id(notification, AlertStatus.FIRING, domain)
        message["In-Reply-To"] = firing
        message["References"] = firing
    message.set_content(body_text(notification))
    return message


class EmailSender(ConfiguredRoute):
    """Mail each notification to the route's recipients; STARTTLS unless the host is loopback."""

    KIND = "email"

    def __init__(
        self,
        route: str,
        config: NotifierConfig,
        *,
        password: Secret | None,
        ca: Secret | None,
        clock: Clock,
    ) -> None:
        super().__init__(route, config)
        assert config.host is not None
        assert config.from_ is not None
        assert config.to
        self._host = config.host
        self._from = config.from_
        self._to = tuple(config.to)
        self._password = password
        self._tls = ssl.create_default_context(cadata=ca.reveal() if ca is not None else None)
        self._clock = clock

    def target(self) -> str:
        """Return the mail server, as host and port."""
        return f"smtp {self._host}:{self._config.port}"

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """Send one message; 5xx for recipients or data is rejected, everything else retried."""
        if destination != self.route:
            return self.unknown_destination(destination)
        try:
            message = email_message(
                notification,
                sender=self._from,
                recipients=self._to,
                subject_prefix=self._config.subject_prefix,
                now=self._clock.now(),
            )
            async with asyncio.timeout(self.timeout_s):
                refused = await self._deliver(message)
        except Exception as exc:
            # Every failure becomes a verdict: a sender never raises, and a logged traceback
            # of this frame could show the password.
            return self._failed(exc)
        return self._accepted(refused)

    async def _deliver(self, message: EmailMessage) -> Mapping[str, aiosmtplib.SMTPResponse]:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._config.port,
            timeout=self.timeout_s,
            start_tls=self._config.starttls,
            tls_context=self._tls if self._config.starttls else None,
            username=self._config.username,
            password=self._password.reveal() if self._password is not None else None,
        )
        async with client:
            refused, _ = await client.send_message(message)
        return refused

    def _accepted(self, refused: Mapping[str, aiosmtplib.SMTPResponse]) -> SendResult:
        where = self.target()
        if not refused:
            return SendResult(
                Verdict.DELIVERED, f"{where}: accepted for {len(self._to)} recipient(s)"
            )
        # Sending again would mail the accepted recipients twice; say who was refused instead.
        return SendResult(Verdict.DELIVERED, f"{where}: accepted, but refused for {_who(refused)}")

    def _failed(self, exc: BaseException) -> SendResult:
        verdict, reason = self._judge(exc)
        return SendResult(verdict, self._scrubbed(f"{self.target()}: {reason}"))

    def _judge(self, exc: BaseException) -> tuple[Verdict, str]:
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            refused = {refusal.recipient: refusal for refusal in exc.recipients}
            permanent = all(_permanent(refusal.code) for refusal in exc.recipients)
            verdict = Verdict.REJECTED if permanent else Verdict.RETRY
            return verdict, f"every recipient refused: {_who(refused)}"
        if isinstance(exc, aiosmtplib.SMTPDataError):
            verdict = Verdict.REJECTED if _permanent(exc.code) else Verdict.RETRY
            return verdict, f"message refused: {exc.code} {_server_text(exc.message)}"
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            text = _server_text(exc.message)
            return Verdict.RETRY, f"sender {exc.sender} refused: {exc.code} {text}"
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            # Not the server's text: it answers the login, which carried the password.
            return Verdict.RETRY, f"login refused ({exc.code}); check username and password_file"
        return Verdict.RETRY, self._no_answer(exc)

    def _no_answer(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout_s:g} s"
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return f"the server answered {exc.code} ({type(exc).__name__})"
        if isinstance(exc, aiosmtplib.SMTPException):
            return _server_text(exc.message)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS failed ({exc.verify_message})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS failed ({exc.reason})"
        if isinstance(exc, OSError):
            return f"cannot connect ({exc.strerror or type(exc).__name__})"
        return type(exc).__name__

    def _scrubbed(self, detail: str) -> str:
        if self._password is None:
            return detail
        return detail.replace(self._password.reveal(), "***")


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def _server_text(text: str) -> str:
    return " ".join(text.split())[:SERVER_TEXT_CHARS]


def _who(refused: Mapping[str, aiosmtplib.SMTPResponse | aiosmtplib.SMTPRecipientRefused]) -> str:
    return "; ".join(
        f"{address}: {answer.code} {_server_text(answer.message)}"
        for address, answer in sorted(refused.items())
    )
