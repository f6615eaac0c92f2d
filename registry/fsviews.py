"""Keeping the filesystem views of `fs_view` repositories up to date (storage.fsview).

A push is answered as fast as without views: the store tells each commit (Store.on_commit)
and this only notes its repository. One task builds the views of the repositories noted,
each once however many commits came meanwhile, a moment after the first (so that the
tags of `docker push --all-tags` come in one build), in a thread of the writes pool.
A build that fails is logged and tried again on the repository's next commit; an image
the view refuses is logged in one line with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from registry.access import matches
from registry.common import CONFIG, POOLS, STORE
from registry.pools import Pools
from storage import Store
from storage.fsview import Built
from storage.types import Committed

log = logging.getLogger("hroot.fsview")

SETTLE_SECONDS = 0.5  # after a commit, how long further ones are waited for


class FsViews:
    """The repositories waiting for their views, and the task that builds them."""

    def __init__(self, store: Store, pools: Pools, patterns: tuple[str, ...]) -> None:
        self._store = store
        self._pools = pools
        self._patterns = patterns
        self._waiting: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._building: asyncio.Future[Built] | None = None
        store.on_commit(self._heard)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="fs views")

    async def stop(self) -> None:
        """Hear no more commits (the store may outlive the app) and let a build under way
        end, before the store closes: its thread writes to git until then."""
        self._loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._building is not None:
            with contextlib.suppress(Exception):  # logged by _build
                await self._building

    def _heard(self, committed: Committed) -> None:
        """Store.on_commit, in the writing thread: note the repository on the loop."""
        loop = self._loop
        if loop is not None and matches(self._patterns, committed.repository):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.want, committed.repository)

    def want(self, repository: str) -> None:
        self._waiting.add(repository)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(SETTLE_SECONDS)
            self._wake.clear()
            waiting, self._waiting = sorted(self._waiting), set()
            for repository in waiting:
                await self._build(repository)

    async def _build(self, repository: str) -> None:
        self._building = asyncio.ensure_future(
            self._pools.write(self._store.build_fs_view, repository)
        )
        try:
            built = await asyncio.shield(self._building)
        except Exception as error:  # one line: the next commit tries again
            log.error("fs view of %s not built: %s", repository, error)
            return
        for where, reason in sorted(built.refused.items()):
            log.warning("fs view of %s:%s refused: %s", repository, where, reason)
        if built.commit is not None:
            log.info(
                "fs view of %s: built %s, removed %s in %.1f s (commit %s)",
                repository,
                ", ".join(built.built) or "nothing",
                ", ".join(built.removed) or "nothing",
                built.seconds,
                built.commit[:12],
            )


FS_VIEWS = web.AppKey("fs_views", FsViews)


def setup(app: web.Application) -> None:
    """Build views for the repositories the config's `fs_view` patterns name, if any."""
    patterns = app[CONFIG].fs_view
    if patterns:
        app[FS_VIEWS] = FsViews(app[STORE], app[POOLS], patterns)
        app.cleanup_ctx.append(_building)


async def _building(app: web.Application) -> AsyncIterator[None]:
    app[FS_VIEWS].start()
    yield
    await app[FS_VIEWS].stop()
