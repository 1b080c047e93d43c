"""Concurrent batches serialize, and a process killed mid-batch loses exactly that batch."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.models import Decision, Mode
from daemon.state import LedgerState, SqliteStore

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


def decision(key: str) -> Decision:
    return Decision(key, "r", "log", {"n": key}, Mode.ENFORCE, None, START)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db", clock=FakeClock(START))
    await store.open()
    yield store
    await store.close()


async def test_batches_started_together_run_one_after_the_other(store: SqliteStore) -> None:
    trail: list[str] = []

    async def poll(source: str) -> None:
        async with store.batch() as batch:
            trail.append(f"{source} begins")
            fresh = await batch.unseen([f"{source}:{i}" for i in range(50)])
            await asyncio.sleep(0)  # hand the loop to the other poll mid-batch
            await batch.mark_seen(sorted(fresh), START)
            await batch.set_cursor(source, {"high_water": 50})
            await batch.record_decisions([decision(f"{source}/0")])
            trail.append(f"{source} ends")

    await asyncio.gather(poll("actions"), poll("logs"), store.integrity_check(), poll("k8sgpu"))

    assert trail == [
        f"{s} {step}" for s in ("actions", "logs", "k8sgpu") for step in ("begins", "ends")
    ]
    for source in ("actions", "logs", "k8sgpu"):
        assert await store.get_cursor(source) == {"high_water": 50}
    assert len(await store.open_entries()) == 3
    async with store.batch() as batch:
        assert await batch.unseen([f"logs:{i}" for i in range(50)]) == set()


async def test_two_connections_to_one_file_wait_for_each_other(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first, second = SqliteStore(path), SqliteStore(path)
    await first.open()
    await second.open()
    try:

        async def write(store: SqliteStore, name: str) -> None:
            for n in range(20):
                async with store.batch() as batch:
                    await batch.mark_seen([f"{name}:{n}:{i}" for i in range(100)], START)
                    await batch.record_decisions([decision(f"{name}/{n}")])

        await asyncio.gather(write(first, "a"), write(second, "b"))
        assert len(await first.ledger()) == 40
        assert await second.integrity_check() == "ok"
    finally:
        await first.close()
        await second.close()


CHILD = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path

from daemon.models import Decision, Mode
from daemon.state import SqliteStore

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
path = Path(sys.argv[1])
wal = path.with_name(path.name + "-wal")


def decision(key):
    return Decision(key, "r", "log", {"n": key}, Mode.ENFORCE, None, NOW)


async def main():
    store = SqliteStore(path)
    await store.open()
    for n in range(3):
        async with store.batch() as batch:
            await batch.mark_seen([f"committed:{n}:{i}" for i in range(1000)], NOW)
            await batch.set_cursor("actions", {"high_water": n})
            await batch.record_decisions([decision(f"committed/{n}")])
    print("wal_before", wal.stat().st_size, flush=True)
    async with store.batch() as batch:
        # Enough rows to overflow the page cache, so uncommitted pages reach the WAL file.
        await batch.mark_seen([f"doomed:{i}" for i in range(100_000)], NOW)
        await batch.set_cursor("actions", {"high_water": 99})
        await batch.record_decisions([decision("doomed/0")])
        print("wal_during", wal.stat().st_size, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


asyncio.run(main())
"""


async def test_a_kill_mid_batch_keeps_committed_batches_and_drops_the_open_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    sizes = dict(line.split() for line in out.decode().splitlines())
    # The open batch had written to the WAL: recovery has real uncommitted frames to ignore.
    assert int(sizes["wal_during"]) > int(sizes["wal_before"])

    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.integrity_check() == "ok"
        assert await store.get_cursor("actions") == {"high_water": 2}
        ledger = await store.ledger()
        assert sorted(e.key for e in ledger) == ["committed/0", "committed/1", "committed/2"]
        assert {e.state for e in ledger} == {LedgerState.INTENT}
        assert await store.get_entry("doomed/0") is None
        async with store.batch() as batch:
            committed = [f"committed:{n}:{i}" for n in range(3) for i in range(1000)]
            assert await batch.unseen(committed) == set()
            doomed = [f"doomed:{i}" for i in range(0, 100_000, 97)]
            assert await batch.unseen(doomed) == set(doomed)
        assert await store.prune_seen(datetime(2100, 1, 1, tzinfo=UTC)) == 3000
    finally:
        await store.close()
