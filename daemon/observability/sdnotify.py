"""The sd_notify protocol: tell systemd we are ready, alive, stopping, and what we are doing."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from structlog.typing import FilteringBoundLogger

from daemon.observability.logging import get_logger


class SystemdNotifier:
    """Send sd_notify datagrams to `$NOTIFY_SOCKET`; every method is a no-op without one."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._log = log or get_logger(component="sdnotify")
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_positive_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_positive_int(environ.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """Return whether there is a socket to notify."""
        return self._address is not None

    def ready(self) -> bool:
        """Tell systemd start-up is complete."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Tell systemd the daemon is shutting down."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """Tell systemd the daemon is reloading its rules (send `ready()` when done)."""
        return self.notify("RELOADING=1")

    def watchdog(self) -> bool:
        """Tell systemd the daemon is alive."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self.notify("STATUS=" + " ".join(text.split()))

    def watchdog_interval(self) -> float | None:
        """Return seconds between watchdog pings (half of WATCHDOG_USEC), or None if not asked."""
        if self._address is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; return whether it was sent."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A full receive queue must not stall the event loop: drop the message instead.
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as error:
            if not self._warned:
                self._warned = True
                self._log.warning(
                    "sd_notify_failed",
                    socket=_printable(self._address),
                    error=str(error),
                    note="further failures are not logged",
                )
            return False
        return True


def _socket_address(address: str) -> str | bytes:
    # A leading "@" names a socket in the abstract namespace, spelled with a NUL byte.
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def _printable(address: str | bytes) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace")
    return address


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    value = int(text)
    return value if value > 0 else None
