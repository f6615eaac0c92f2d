"""Followers: read-only registries kept in step with a primary by `git fetch` (README: Followers).

A follower (`hroot serve --follow SOURCE`) fetches the primary's `hroot/*` branches every
`follow_interval` seconds with storage.transport, pruned: each branch is set to what the
primary says, and one the primary deleted goes. git sends only the objects the follower
lacks. The follower serves pulls of whatever it holds at once, from the first second
(its first fetch runs in the background), keeps serving when the primary is down, and
refuses every write with DENIED naming the primary: its branches are the primary's.

A pull of a manifest the follower does not have yet (pushed to the primary a moment
ago) starts one fetch before the 404 goes out. Such fetches are shared and spaced: a
flood of 404s costs at most one fetch per MISS_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from registry import manifests
from registry.common import CONFIG, POOLS, STORE
from registry.config import ConfigError
from registry.pools import Pools
from storage import repository, transport
from storage.errors import Denied, ManifestUnknown, NameUnknown, StoreError

log = logging.getLogger("hroot.follow")

# URL schemes git fetches from; anything else must be a local path.
SCHEMES = ("http", "https", "ssh", "git", "file")
MISS_EVERY = 1.0  # seconds between the starts of two fetches that misses asked for
MISS_WAIT = 10.0  # the longest a miss waits for its fetch before answering 404 anyway
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def shown(source: str) -> str:
    """The source as logs and errors name it: a URL without its user name and password."""
    if "://" not in source:
        return source
    url = URL(source)
    return str(url.with_user(None)) if url.user or url.password else source


def check_source(source: str, data: Path) -> None:
    """Refuse, before anything is created, a source git could never fetch a registry from:
    a URL of a scheme git does not speak, a path that is no folder, the registry itself."""
    scheme, sep, _ = source.partition("://")
    if sep:
        if scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"follow: {shown(source)} is not a URL git fetches from "
                f"({', '.join(SCHEMES)}) nor a path"
            )
        return
    path = Path(source)
    if not path.is_dir():
        raise ConfigError(
            f"follow: {source} is neither a folder (a registry's git repository) nor a URL "
            "such as http://HOST:PORT/git/"
        )
    if data.exists() and path.resolve() == data.resolve():
        raise ConfigError(f"follow: {source} is this registry itself (its --data)")


def branch(ref: str) -> str:
    """`hroot/x` for `refs/heads/hroot/x`: the branch as `git branch` lists it."""
    return ref.removeprefix("refs/heads/")


def change(old: str | None, new: str | None) -> str:
    """How a branch moved, for people: `a1b2c3d -> d4e5f6a`, `new d4e5f6a`, `deleted (was …)`."""
    if old is None:
        return f"new {str(new)[:7]}"
    if new is None:
        return f"deleted (was {old[:7]})"
    return f"{old[:7]} -> {new[:7]}"


def reason(error: StoreError) -> str:
    """One line of why a fetch failed: git's first complaint (advice lines follow it)."""
    return str(error.detail).splitlines()[0] if error.detail else repository.describe(error)


class Follower:
    """The fetches of one follower: periodic, on misses, one at a time.

    `last_fetched` (time.time() of the last fetch that succeeded, None before the first)
    says how far behind the primary the follower may be.
    """

    def __init__(self, gitdir: Path, source: str, interval: float, pools: Pools) -> None:
        self.gitdir = gitdir
        self._pools = pools
        self.source = source
        self.primary = shown(source)
        self.interval = interval
        self.last_fetched: float | None = None
        # The fetch running now and when it began (time.monotonic()).
        self._fetching: tuple[float, asyncio.Task[None]] | None = None
        # The fetch misses asked for that has not begun yet, and when the last one began.
        self._miss: asyncio.Task[None] | None = None
        self._miss_began = -math.inf
        self._failing: str | None = None  # the reason the last fetch failed, if it did

    async def run(self) -> None:
        """Fetch every `interval` seconds, until cancelled."""
        log.info("following %s every %g s", self.primary, self.interval)
        while True:
            await self.fetch()
            await asyncio.sleep(self.interval)

    async def fetch(self, began_after: float = -math.inf) -> None:
        """Wait for a fetch that began at `began_after` (time.monotonic()) or later.

        One git fetch at a time: a fetch in flight that began late enough is joined, one
        that began too early is waited for and followed by a new one. Two at once would
        only race for the same ref locks.
        """
        while True:
            if self._fetching is None:
                self._fetching = (time.monotonic(), asyncio.create_task(self._fetch_once()))
            began, task = self._fetching
            await asyncio.shield(task)  # a request that goes away leaves the fetch running
            if began >= began_after:
                return

    async def joined(self) -> bool:
        """Wait for the fetch in flight, if one is: False when none was."""
        if self._fetching is None:
            return False
        await asyncio.shield(self._fetching[1])
        return True

    async def after_miss(self) -> None:
        """Fetch for a pull that found nothing: every miss waits for a fetch that began
        after it arrived, at most MISS_WAIT seconds; misses that arrive before it begins
        share it, and it begins no sooner than MISS_EVERY seconds after the one before."""
        if self._miss is None:
            self._miss = asyncio.create_task(self._fetch_for_misses())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._miss), MISS_WAIT)

    async def _fetch_for_misses(self) -> None:
        await asyncio.sleep(self._miss_began + MISS_EVERY - time.monotonic())
        self._miss = None  # misses from now on wait for the next one
        self._miss_began = time.monotonic()
        await self.fetch(began_after=self._miss_began)

    async def _fetch_once(self) -> None:
        """One `git fetch --prune`, off the event loop; logs what moved or why it failed."""
        try:
            fetched = await self._pools.write(transport.fetch, self.gitdir, self.source, True)
        except StoreError as error:
            self._failed(reason(error))
        except Exception:  # a bug: say so, and try again next time
            log.exception("fetching from %s failed", self.primary)
            self._failed("internal error")
        else:
            self.last_fetched = time.time()
            if self._failing is not None:
                log.info("following %s again", self.primary)
                self._failing = None
            for ref, (old, new) in fetched.changed.items():
                log.info("followed %s: %s %s", self.primary, branch(ref), change(old, new))
        finally:
            self._fetching = None

    def _failed(self, why: str) -> None:
        """A warning when fetches start failing or fail differently; silence while the same
        failure repeats every interval."""
        if why != self._failing:
            log.warning(
                "cannot fetch from %s, serving what is here and retrying every %g s: %s",
                self.primary,
                self.interval,
                why,
            )
        self._failing = why

    async def close(self) -> None:
        """Stop asking for fetches; a git fetch already running finishes in its thread."""
        if self._miss is not None:
            self._miss.cancel()


FOLLOWER = web.AppKey("follower", Follower)


def setup(app: web.Application) -> None:
    """Make the app a follower of its config's `follow`: writes refused, misses fetched,
    fetches every `follow_interval` seconds while it runs."""
    config = app[CONFIG]
    assert config.follow is not None
    app[FOLLOWER] = Follower(app[STORE].path, config.follow, config.follow_interval, app[POOLS])
    app.middlewares.append(read_only)
    app.cleanup_ctx.append(_following)


async def _following(app: web.Application) -> AsyncIterator[None]:
    follower = app[FOLLOWER]
    task = asyncio.create_task(follower.run())
    yield
    task.cancel()
    await follower.close()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """DENIED for every write under /v2/, before a byte of it is read; a manifest that is
    not here yet gets one fetch and a second look before its 404."""
    follower = request.app[FOLLOWER]
    if request.method in WRITES and request.path.startswith("/v2/"):
        raise Denied(
            f"{request.method} {request.path}",
            message=f"this registry is a read-only follower of {follower.primary}: "
            "push and delete there",
        )
    try:
        return await handler(request)
    except (ManifestUnknown, NameUnknown):
        if request.match_info.handler is not manifests.get_manifest:
            raise
    # A fetch running now may bring it; if not, one that begins after this miss.
    if await follower.joined():
        with contextlib.suppress(ManifestUnknown, NameUnknown):
            return await handler(request)
    await follower.after_miss()
    return await handler(request)
