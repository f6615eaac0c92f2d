"""What the pages read from the store: blocking, run in the read pool, each one page's
worth of the store's own queries (`usage`, `tags`, `image`, `get_manifest`), so that a
page costs its rows and not the registry's size."""

from __future__ import annotations

import asyncio
import json
import logging
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from storage import Store
from storage.errors import StoreError
from storage.history import Image, Pushed, RepositoryUsage, Summary, Usage

log = logging.getLogger("hroot.ui")


@dataclass(frozen=True)
class RepositoryRow:
    name: str
    tags: int
    usage: RepositoryUsage | None  # as of the last `hroot ls` count, None before one


@dataclass(frozen=True)
class RepositoriesPage:
    rows: list[RepositoryRow]
    next: str | None  # the `last` of the next page, if there is one


def repositories(
    store: Store, visible: list[str], n: int, last: str | None, usage: Usage | None
) -> RepositoriesPage:
    """The page of `visible` (sorted names the caller may see) after `last`, each with its
    tag count now and what `usage` (a recent `store.usage()`) says of its bytes."""
    start = bisect_right(visible, last) if last is not None else 0
    names = visible[start : start + n]
    counted = {row.repository: row for row in usage.repositories} if usage else {}
    rows = [RepositoryRow(name, _tag_count(store, name), counted.get(name)) for name in names]
    more = start + n < len(visible)
    return RepositoriesPage(rows, names[-1] if more and names else None)


def _tag_count(store: Store, name: str) -> int:
    try:
        return len(store.tags(name))
    except StoreError:  # removed since it was listed
        return 0


class Sizes:
    """`hroot ls`'s figures for the repository list, counted in the background: unique and
    shared bytes need every repository's tip (seconds for 2,000 of them), more than a
    page may take. A page shows the last count and starts the next one when that is
    older than REFRESH seconds."""

    REFRESH = 60.0

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.counted: datetime | None = None  # when the count began
        self._running: asyncio.Future[None] | None = None

    def refresh(self, count: Callable[[], Awaitable[Usage]]) -> None:
        """Start `count` unless one runs or the last is recent."""
        now = datetime.now(UTC)
        if self._running is not None and not self._running.done():
            return
        if self.counted is not None and (now - self.counted).total_seconds() < self.REFRESH:
            return
        self._running = asyncio.ensure_future(self._count(count, now))

    async def _count(self, count: Callable[[], Awaitable[Usage]], began: datetime) -> None:
        try:
            self.usage = await count()
        except Exception:  # a page without sizes is no failure; the next view tries again
            log.exception("counting the repositories' sizes failed")
            return
        self.counted = began

    async def wait(self) -> None:
        """For tests and shutdown: until a count under way has ended."""
        if self._running is not None:
            await asyncio.shield(self._running)


class PushTimes:
    """The push indexes the pages have read in the background, one read at a time per
    repository, for repositories too big to read theirs during a page."""

    def __init__(self) -> None:
        self._reading: dict[str, asyncio.Future[object]] = {}

    def read(self, name: str, read: Callable[[], Awaitable[object]]) -> None:
        """Start `read` for `name` unless one runs."""
        running = self._reading.get(name)
        if running is None or running.done():
            self._reading[name] = asyncio.ensure_future(self._logged(name, read))

    async def _logged(self, name: str, read: Callable[[], Awaitable[object]]) -> None:
        try:
            await read()
        except Exception:  # the next view tries again
            log.exception("reading the push times of %s failed", name)

    async def wait(self) -> None:
        """For tests and shutdown: until the reads under way have ended."""
        await asyncio.gather(*self._reading.values())


@dataclass(frozen=True)
class TagRow:
    tag: str
    image: Summary  # digest, size (of an index, of every image it lists), platforms
    pushed: datetime | None  # the newest push of its manifest


@dataclass(frozen=True)
class TagsPage:
    total: int  # tags of the repository
    rows: list[TagRow]
    next: str | None
    pushes_pending: bool  # push times left out while the push index is read (PUSHES_LATER)


# Tags beyond which a page does not wait for a push index the store does not have yet:
# reading it for 10,000 tags took 0.15-0.4 s of a first view after a restart.
PUSHES_LATER = 2_000


def tags(store: Store, name: str, n: int, last: str | None) -> TagsPage:
    """One page of a repository's tags, each with its image in brief and when it was
    pushed, from the store's push index (one `git log` per branch tip, not one per row).
    A repository of more than PUSHES_LATER tags whose index is not read yet is shown
    without push times (`pushes_pending`: the caller has the index read meanwhile)."""
    every = store.tags(name)
    start = bisect_right(every, last) if last is not None else 0
    page = every[start : start + n]
    pending = bool(page) and len(every) > PUSHES_LATER and not store.pushes_indexed(name)
    pushes = store.pushes(name) if page and not pending else {}
    rows = [_tag_row(store, name, tag, pushes) for tag in page]
    more = start + n < len(every)
    return TagsPage(len(every), rows, page[-1] if more and page else None, pending)


def _tag_row(store: Store, name: str, tag: str, pushes: Mapping[str, Pushed]) -> TagRow:
    image = store.summary(name, tag)
    pushed = pushes.get(image.digest)
    return TagRow(tag, image, pushed.time if pushed else None)


@dataclass(frozen=True)
class ImagePage:
    image: Image
    manifest: str  # pretty-printed when it is JSON
    shared: dict[str, list[str]]  # layer digest -> the other visible repositories holding it


def image(store: Store, name: str, reference: str, others: list[str]) -> ImagePage:
    """An image as `hroot show` reads it, its manifest, and which of `others` (the
    repositories the caller may see) hold each of its layers. Layers are not read (a
    page must not decompress gigabytes), so uncompressed sizes are left out."""
    found = store.image(name, reference, inspect_layers=False)
    body = store.get_manifest(name, found.digest).body
    try:
        manifest = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        manifest = body.decode(errors="replace")
    digests = list(dict.fromkeys(layer.digest for layer in found.layers))
    shared = store.holders(digests, [other for other in others if other != name])
    return ImagePage(found, manifest, shared)
