"""Batches that are cancelled half way: the store stays usable and consistent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.state import SqliteStore


async def test_a_batch_cancelled_while_it_begins_leaves_the_store_usable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:

        async def one() -> None:
            async with store.batch() as batch:
                await batch.set_cursor("first", {"n": 1})

        task = asyncio.create_task(one())
        for _ in range(3):  # let the task reach its BEGIN, then cancel it there
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.batch() as batch:
            await batch.set_cursor("second", {"n": 2})
        assert await store.get_cursor("first") is None
        assert await store.get_cursor("second") == {"n": 2}
    finally:
        await store.close()
