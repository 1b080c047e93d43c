"""Fake alert receivers on loopback for the alerting tests: PagerDuty, Slack, webhook and SMTP.

Each HTTP receiver records every request it gets and answers from a script the test writes (a
status, headers, or a hang that lasts until the test releases it, or until the receiver closes),
then with its default answer. None of them waits on time: a hang is an `asyncio.Event`.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from processes import free_port


@dataclass(frozen=True)
class Answer:
    """How a receiver answers one request: a status and headers, or no answer at all."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    hang: bool = False


HANG = Answer(status=503, hang=True)


@dataclass
class Request:
    """One request a receiver got, and how it was answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None while hanging, or if never answered

    def json(self) -> Any:
        """Return the body decoded as JSON."""
        return json.loads(self.body)


class HttpReceiver:
    """A loopback HTTP server that records each POST and answers as scripted."""

    def __init__(self, default: Answer | None = None, *, echo: bool = False) -> None:
        self.default = default or Answer()
        self.script: list[Answer] = []
        self.requests: list[Request] = []
        self.echo = echo  # answer with the request (path, headers, body), as a hostile receiver
        self._release = asyncio.Event()
        self._server: TestServer | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> Self:
        """Listen on 127.0.0.1 (on `port`, or on a free one)."""
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=port)
        await self._server.start_server()
        assert self._server.port is not None
        self.port = self._server.port
        return self

    async def close(self) -> None:
        """Let hanging requests end, then stop listening."""
        self.release()
        if self._server is not None:
            await self._server.close()
            self._server = None

    def release(self) -> None:
        """Let every hanging request end (it gets its scripted status, but was never awaited)."""
        self._release.set()

    def url(self, path: str = "/") -> str:
        """Return an http URL to this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    # --- scripting -------------------------------------------------------------------------------

    def answer(self, *answers: Answer | int) -> None:
        """Answer the next requests with these, in order, then with the default."""
        self.script += [a if isinstance(a, Answer) else Answer(a) for a in answers]

    @property
    def answered(self) -> list[Request]:
        """Return the requests that got an answer."""
        return [r for r in self.requests if r.status is not None]

    # --- serving ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        received = Request(request.path_qs, dict(request.headers), await request.read())
        self.requests.append(received)
        answer = self.script.pop(0) if self.script else self.default
        if answer.hang:
            await self._release.wait()
            return web.Response(status=answer.status, text="released")
        self.accepted(received, answer.status)
        received.status = answer.status
        if self.echo:
            text = f"{request.path_qs} {dict(request.headers)} {received.body!r}"
        else:
            text = answer.text if answer.text is not None else self.text_for(answer.status)
        return web.Response(status=answer.status, text=text, headers=answer.headers)

    def accepted(self, request: Request, status: int) -> None:
        """Act on a request that is answered with `status` (for receivers with state)."""

    def text_for(self, status: int) -> str:
        """Return the body of an answer with this status."""
        return "ok" if status < 300 else "error"


class FakePagerDuty(HttpReceiver):
    """PagerDuty's Events API v2: keeps incidents by dedup key, as PagerDuty does.

    A trigger answered 2xx for a dedup key with no open incident opens one; a later trigger for
    it is folded into it; a resolve closes it. Requests that were not answered 2xx change nothing.
    """

    def __init__(self, default: Answer | None = None, *, echo: bool = False) -> None:
        super().__init__(default or Answer(202), echo=echo)
        self.open: set[str] = set()
        self.incidents: list[str] = []  # dedup keys, once per incident opened
        self.events: list[dict[str, Any]] = []  # every accepted event body

    def accepted(self, request: Request, status: int) -> None:
        """Open or close the incident an accepted event names."""
        if not 200 <= status < 300:
            return
        body = request.json()
        self.events.append(body)
        key = body["dedup_key"]
        if body["event_action"] == "trigger" and key not in self.open:
            self.open.add(key)
            self.incidents.append(key)
        elif body["event_action"] == "resolve":
            self.open.discard(key)

    def text_for(self, status: int) -> str:
        """Answer like PagerDuty does."""
        if 200 <= status < 300:
            return json.dumps({"status": "success", "message": "Event processed"})
        return json.dumps({"status": "invalid event", "message": "Event object is invalid"})

    def triggers(self, key: str | None = None) -> list[dict[str, Any]]:
        """Return the accepted trigger events, for one dedup key or all."""
        return [
            e
            for e in self.events
            if e["event_action"] == "trigger" and (key is None or e["dedup_key"] == key)
        ]


class FakeSlack(HttpReceiver):
    """A Slack incoming webhook: answers `ok`, or Slack's one-word error codes."""

    def text_for(self, status: int) -> str:
        """Answer like Slack does."""
        return {
            200: "ok",
            400: "invalid_payload",
            403: "invalid_token",
            404: "channel_not_found",
        }.get(status, "rollup_error")

    def headers(self) -> list[str]:
        """Return the header texts of the messages Slack accepted, in order."""
        return [r.json()["blocks"][0]["text"]["text"] for r in self.answered if r.status == 200]


def verify_signature(request: Request, secret: str, header: str = "X-Cloudpilot-Signature") -> bool:
    """Return whether a webhook request carries a valid HMAC-SHA256 signature of its body."""
    timestamp = request.headers["X-Cloudpilot-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest(request.headers[header], f"sha256={expected.hexdigest()}")


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class Mail:
    """One message the SMTP server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: str | None  # the username the session logged in with


class FakeSmtp:
    """An SMTP server on 127.0.0.1 that needs STARTTLS, then a login, and records mail.

    `login_answers` and `data_answers` script the next answers to AUTH and DATA (an AUTH answer
    refuses the login with that text, even for the right password); then logins with the right
    password succeed and mail is accepted.
    """

    def __init__(self, cert: Path, key: Path, *, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.login_answers: list[str] = []
        self.data_answers: list[str] = []
        self.logins = 0
        self.mail: list[Mail] = []
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Self:
        """Listen on a free port."""

        def protocol() -> SMTP:
            return SMTP(
                self,
                hostname="localhost",
                tls_context=self._tls,
                require_starttls=True,
                authenticator=self._authenticate,
                auth_require_tls=True,
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins += 1
        if self.login_answers:
            # A careless server that quotes the login it refuses: it must not reach the logs.
            return AuthResult(success=False, handled=False, message=self.login_answers.pop(0))
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.username.encode(),
            self.password.encode(),
        )
        if ok:
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Record the message, or answer as scripted."""
        if self.data_answers:
            return self.data_answers.pop(0)
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
                login=_login(session),
            )
        )
        return "250 Message accepted"

    def subjects(self) -> list[str]:
        """Return the subjects of the mail received, in order."""
        return [str(mail.message["Subject"]) for mail in self.mail]


def _login(session: Session) -> str | None:
    data = session.auth_data
    return data.login.decode() if isinstance(data, LoginPassword) else None


# --- a real Alertmanager ---------------------------------------------------------------------

ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@contextmanager
def alertmanager_process(tmp_path: Path) -> Iterator[str]:
    """Run Debian's Alertmanager on a free loopback port; yield its URL; skip when absent."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip(
            "Alertmanager is not installed, so the real-Alertmanager tests cannot run. `make "
            "test` installs Debian's prometheus-alertmanager with apt-get "
            "(.ci/ensure-packages); that failed or was skipped here. Install it with "
            "`apt-get install prometheus-alertmanager`."
        )
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    (tmp_path / "am-data").mkdir()
    with (tmp_path / "alertmanager.log").open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - a fixed binary found on PATH
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(name="hook")
async def hook_fixture() -> AsyncIterator[HttpReceiver]:
    """Yield a webhook receiver that accepts everything with 204 (tests name it `hook`)."""
    receiver = await HttpReceiver(Answer(204)).start()
    try:
        yield receiver
    finally:
        await receiver.close()
