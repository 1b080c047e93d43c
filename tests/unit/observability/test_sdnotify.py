"""SystemdNotifier against a real AF_UNIX datagram socket."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from daemon.observability.logging import configure_logging
from daemon.observability.sdnotify import SystemdNotifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)  # a bound on failure only; a passing test never waits
        yield sock, str(path)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_each_message_is_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    assert notifier.ready()
    assert notifier.status("polling 6 sources\n3 rules")
    assert notifier.watchdog()
    assert notifier.reloading()
    assert notifier.stopping()

    received = [sock.recv(4096) for _ in range(5)]
    assert received == [
        b"READY=1",
        b"STATUS=polling 6 sources 3 rules",
        b"WATCHDOG=1",
        b"RELOADING=1",
        b"STOPPING=1",
    ]


def test_several_assignments_share_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})

    notifier.notify("READY=1", "STATUS=ready")

    assert sock.recv(4096) == b"READY=1\nSTATUS=ready"


def test_an_abstract_socket_is_reached_by_its_at_name() -> None:
    name = f"cloudpilot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})

        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_without_a_socket_every_call_is_a_quiet_no_op(environ: dict[str, str]) -> None:
    notifier = SystemdNotifier.from_environ(environ)

    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.status("x")


@pytest.mark.usefixtures("_restore_logging")
def test_a_failing_socket_never_raises_and_warns_once(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})

    results = [notifier.ready(), notifier.watchdog(), notifier.stopping()]

    assert results == [False, False, False]
    warnings = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(w["event"], w["level"]) for w in warnings] == [("sd_notify_failed", "warning")]
    assert warnings[0]["socket"] == str(tmp_path / "gone")


def test_a_full_receive_queue_drops_the_message_instead_of_blocking(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})

    sent = [notifier.watchdog() for _ in range(10_000)]

    assert sent[0]
    assert not all(sent)


WATCHDOG = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}


def test_the_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert SystemdNotifier.from_environ(WATCHDOG).watchdog_interval() == 15.0


def test_the_watchdog_interval_holds_when_watchdog_pid_is_ours() -> None:
    environ = {**WATCHDOG, "WATCHDOG_PID": str(os.getpid())}

    assert SystemdNotifier.from_environ(environ).watchdog_interval() == 15.0


def test_no_watchdog_when_it_is_meant_for_another_process() -> None:
    environ = {**WATCHDOG, "WATCHDOG_PID": str(os.getpid() + 1)}

    assert SystemdNotifier.from_environ(environ).watchdog_interval() is None


@pytest.mark.parametrize(
    "environ",
    [
        {"NOTIFY_SOCKET": "/run/systemd/notify"},
        {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "0"},
        {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "thirty"},
        {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30000000"},
    ],
    ids=["unset", "zero", "garbage", "negative", "no-socket"],
)
def test_no_watchdog_without_a_usable_watchdog_usec_and_socket(environ: dict[str, str]) -> None:
    assert SystemdNotifier.from_environ(environ).watchdog_interval() is None
