"""The application's threads: one sized pool for reads, one for writes.

Every blocking store call of a request runs in one of them (registry.common.blocking):
GET and HEAD in the reads pool, every other method in the writes pool, so that a slow
or stuck write never delays a pull. One repository never holds more than half of the
write threads: its further writes wait on the event loop, holding no thread, so a
repository whose ref lock is stuck (a crash's lock is waited for until it is stale,
storage.refs) never delays the writes of the others. The app's own background work
(gc, a follower's fetches, the lineage index) runs in these pools too: nothing in the
registry uses the loop's default executor.

Background jobs that hold the GIL for seconds (the lineage index after a start, the
pages' count of sizes) run as `background` work and pause between their pieces while
requests' reads run (`yielder`): the first pages viewed after a restart took 1 s beside
them, 0.25 s alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

YIELD_BUDGET = 2.0  # seconds one background job may spend waiting for requests, in all
YIELD_STEP = 0.005  # seconds between two looks at whether requests still run


class Pools:
    """The reads pool and the writes pool, with the per-repository limit on writes."""

    def __init__(self, read_threads: int, write_threads: int) -> None:
        self.reads = ThreadPoolExecutor(read_threads, thread_name_prefix="hroot-read")
        self.writes = ThreadPoolExecutor(write_threads, thread_name_prefix="hroot-write")
        self.per_repository = max(1, write_threads // 2)
        # by repository while any write of it waits or runs: its slots, and how many use them
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._lock = threading.Lock()
        self._reading = 0  # reads pool threads running `read` work now

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.reads.submit(self._counted, fn, *args))

    async def background(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the reads pool, not counted as a read: a job that `yielder`
        pauses must not wait for itself."""
        return await asyncio.wrap_future(self.reads.submit(fn, *args))

    def yielder(self, budget: float = YIELD_BUDGET) -> Callable[[], None]:
        """A `pause` for one background job to call between its pieces: it waits while
        reads run, `budget` seconds at most in all, so that a steady stream of pulls
        cannot hold the job back for long (a push may be waiting for the lineage index)."""
        left = budget

        def pause() -> None:
            nonlocal left
            while left > 0 and self._reading:
                time.sleep(YIELD_STEP)
                left -= YIELD_STEP

        return pause

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._reading += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._reading -= 1

    async def write(self, fn: Callable[..., T], *args: Any, repository: str | None = None) -> T:
        """`fn(*args)` in the writes pool; for a repository, once one of its slots is free.

        The slot is given back when the thread is done, not when the caller stops
        waiting: a client that leaves does not free a thread that still works for it.
        """
        if repository is None:
            return await asyncio.wrap_future(self.writes.submit(fn, *args))
        slots = self._enter(repository)
        try:
            await slots.acquire()
        except BaseException:
            self._leave(repository, release=False)
            raise
        try:
            future = self.writes.submit(fn, *args)
        except BaseException:
            self._leave(repository, release=True)
            raise
        loop = asyncio.get_running_loop()

        def done(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(self._leave, repository, True)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop taking work; what runs ends on its own (the store is closed after it)."""
        for pool in (self.reads, self.writes):
            pool.shutdown(wait=False, cancel_futures=True)

    def _enter(self, repository: str) -> asyncio.Semaphore:
        slots, users = self._slots.get(repository, (None, 0))
        if slots is None:
            slots = asyncio.Semaphore(self.per_repository)
        self._slots[repository] = (slots, users + 1)
        return slots

    def _leave(self, repository: str, release: bool) -> None:
        slots, users = self._slots[repository]
        if release:
            slots.release()
        if users == 1:
            del self._slots[repository]
        else:
            self._slots[repository] = (slots, users - 1)
