"""Exclusive locks beside the state database: one daemon per state file, one exec per server.

A lock is a file locked with flock: the kernel releases it when the process ends, however it
ends (a `kill -9` included), so a crash never leaves a state file or a server locked. The holder
writes its pid into the file, for the message of whoever finds it taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from daemon.errors import ConfigError


class StateInUse(ConfigError):
    """Another `cloudpilot run` holds the state file (exit 78: a second daemon is a setup error)."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[int | None]:
    """Hold an exclusive lock on `path` for as long as the block runs.

    Yield None when the lock is held, or the pid of the process that holds it already (0 when
    it cannot be read); the block runs either way and must not act in the second case.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            yield int(holder) if holder.isdigit() else 0
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)


def daemon_lock_path(state_path: Path) -> Path:
    """Return the lock file a daemon holds beside its state database."""
    return state_path.with_name(f"{state_path.name}.lock")


@contextlib.contextmanager
def hold_state(state_path: Path) -> Iterator[None]:
    """Hold the state file for one daemon, or raise StateInUse naming the one that holds it."""
    path = daemon_lock_path(state_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path) as holder:
        if holder is not None:
            who = f"pid {holder}" if holder else "another process"
            raise StateInUse(
                f"{state_path}: already in use by another cloudpilot run ({who}, lock "
                f"{path}): one daemon per state file. Stop it first, or give this one another "
                "[state] path; `cloudpilot exec` and `approve` work beside a running daemon"
            )
        yield
