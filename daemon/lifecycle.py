"""Small context managers for the daemon's parts, entered on one stack and left in reverse.

As with aiohttp's cleanup contexts, each part says in one place how it starts and how it stops,
so a start that fails half-way unwinds exactly what it entered, and a stop leaves in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, Protocol, TypeVar


class Openable(Protocol):
    """A part opened before use and closed after (the store)."""

    async def open(self) -> None:
        """Open the part."""
        ...

    async def close(self) -> None:
        """Close the part."""
        ...


PartT = TypeVar("PartT", bound=Openable)
ResultT = TypeVar("ResultT")


@contextlib.asynccontextmanager
async def opened(part: PartT) -> AsyncIterator[PartT]:
    """Open `part` for as long as the block runs, and close it on the way out."""
    await part.open()
    try:
        yield part
    finally:
        await part.close()


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` as a task for as long as the block runs; cancel it on the way out."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def finishing(tasks: set[asyncio.Task[ResultT]]) -> AsyncIterator[None]:
    """On the way out, wait for the tasks still in `tasks` (which may grow while it runs)."""
    try:
        yield
    finally:
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[signal.Signals, Callable[[], object]]) -> Iterator[None]:
    """Handle these signals in the running loop while the block runs; restore them after."""
    loop = asyncio.get_running_loop()
    try:
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        yield
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
