"""The line `systemctl status` shows: sent over sd_notify when it changes, and only then."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SimFactory, linked_daemon

from daemon.app import Daemon
from daemon.observability.sdnotify import SystemdNotifier

RULES = """\
rules:
  - name: failed-actions
    on: seeweb.action.failed
    throttle: {once_within: 1h, group_by: [data.id]}
    do:
      - alert: {severity: critical, summary: "{{ event.data.type }} failed", to: [hook]}
"""


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


def received(sock: socket.socket) -> list[str]:
    """Return every datagram waiting on the socket (they are sent synchronously)."""
    lines = []
    while True:
        try:
            lines.append(sock.recv(4096).decode())
        except BlockingIOError:
            return lines


async def poll(daemon: Daemon, seconds: float) -> None:
    daemon.clock.advance(seconds)  # type: ignore[attr-defined]
    await daemon.poll_once()
    await daemon.runner.wait_idle()


async def test_the_status_line_follows_sources_alerts_and_polls(
    simulator: SimFactory, tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    sock, address = listener
    sim = await simulator("quiet")
    daemon = linked_daemon(sim, tmp_path, RULES)
    daemon.notifier = SystemdNotifier(address)
    async with daemon:
        assert daemon.report_status()
        assert not daemon.report_status()  # unchanged: not sent again
        await poll(daemon, 0)
        daemon.report_status()
        world = sim.sim.world
        world.start_action("ec300001", "reboot", duration_s=0, outcome="failed")
        world.sync()
        await sim.call("POST", "/_sim/faults", json={"path": "/ecs/v2/logs", "status": 500})
        await poll(daemon, 120)
        daemon.report_status()
    assert received(sock) == [
        "STATUS=0/4 sources up, 0 alerts firing, no poll yet",
        "STATUS=4/4 sources up, 0 alerts firing, last poll 12:00 UTC",
        "STATUS=3/4 sources up (logs failing), 1 alert firing, last poll 12:02 UTC",
    ]
