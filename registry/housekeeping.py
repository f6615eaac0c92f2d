"""The periodic `hroot gc` of a running `hroot serve` (storage.gc), on by default.

Every `gc_interval` seconds (a day by default; 0 turns it off) the app runs the
store's gc in a thread of its writes pool, so requests go on meanwhile, with the
retention the config asks for (none by default), and logs one line of what it did.
A follower runs it too (it has no retention): its own fetches leave objects to
prune. A run that fails is logged and the next one comes at its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from registry.common import CONFIG, POOLS, STORE

log = logging.getLogger("hroot.gc")


@dataclass
class GcRuns:
    """What the server's gc runs came to, for its metrics."""

    succeeded: int = 0
    failed: int = 0
    seconds: float = 0.0  # all runs together


GC_RUNS = web.AppKey("gc_runs", GcRuns)


def setup(app: web.Application) -> None:
    app[GC_RUNS] = GcRuns()
    if app[CONFIG].gc_interval > 0:
        app.cleanup_ctx.append(_collecting)


async def _collecting(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_every_interval(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _every_interval(app: web.Application) -> None:
    config, store, pools, runs = app[CONFIG], app[STORE], app[POOLS], app[GC_RUNS]
    while True:
        await asyncio.sleep(config.gc_interval)
        log.info("gc started (expiry %g s)", config.gc_expiry)
        started = time.monotonic()
        try:
            report = await pools.write(store.gc, config.gc_expiry, None, config.retention)
        except Exception:
            runs.failed += 1
            log.exception("gc failed; the next run is in %g s", config.gc_interval)
        else:
            runs.succeeded += 1
            log.info("gc %s", report.summary())
        runs.seconds += time.monotonic() - started
