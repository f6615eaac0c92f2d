"""Pull-through: what a proxied repository lacks comes from its upstream, is served while it
is stored, and is committed like a push (docs/format.md §4: `Proxied-From`).

A commit's tree must be a whole OCI layout, so an image is committed once all its blobs
(and, for an index, all its images) are stored. Until then the manifest is served from
memory, and each blob a client asks for is streamed to it as it arrives from upstream
and into an upload spool; a background task fetches what no client asked for and makes
the commit. Each missing blob and manifest is fetched once, however many ask for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from registry.common import PIECE
from registry.errors import UpstreamFailed
from registry.pools import Pools
from registry.proxy.upstream import BlobStream, UpstreamClient
from registry.upstreams import Upstream, upstream_of
from storage import Store, manifests
from storage.digests import is_digest
from storage.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    StoreError,
)
from storage.types import Manifest

log = logging.getLogger("hroot.proxy")

T = TypeVar("T")

# Blobs of one image fetched at once in the background, as docker pulls three at a time,
# once the client that pulled its manifest had this long to ask for them itself.
PARALLEL_BLOBS = 4
CLIENTS_FIRST_SECONDS = 1.0
# Pieces a client may fall behind the upstream before the fetch waits for it, and how long
# it waits before leaving that client behind (its connection is dropped; the fetch goes on).
QUEUED_PIECES = 16
STALLED_CLIENT_SECONDS = 60.0
END = b""  # after the last piece


class _Refused(Exception):
    """What a client listening to a blob fetch is told when the fetch fails."""


class BlobFetch:
    """One blob coming from upstream into a repository's staging: streamed to the clients
    that asked before its first piece went out, stored for everyone else."""

    def __init__(self) -> None:
        self.size: int | None = None
        self.held = b""  # the piece received last, sent once the next one (or the end) is in
        self.started = asyncio.get_running_loop().create_future()  # set when size is known
        self.done = asyncio.get_running_loop().create_future()
        self._listeners: list[asyncio.Queue[bytes | BaseException]] = []
        self._sending = False

    def listen(self) -> asyncio.Queue[bytes | BaseException] | None:
        """A queue of the blob's pieces, then END (or the error); None once the first piece
        went out: then wait for `done` and read the stored blob."""
        if self._sending:
            return None
        queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue(QUEUED_PIECES)
        self._listeners.append(queue)
        return queue

    def leave(self, queue: asyncio.Queue[bytes | BaseException]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(queue)

    async def send(self, piece: bytes) -> None:
        self._sending = True
        for queue in list(self._listeners):
            try:
                await asyncio.wait_for(queue.put(piece), STALLED_CLIENT_SECONDS)
            except TimeoutError:
                self.leave(queue)
                _replace_contents(queue, _Refused("the client fell too far behind"))

    def fail(self, error: BaseException) -> None:
        for queue in self._listeners:
            _replace_contents(queue, _Refused(str(error)))
        for future in (self.started, self.done):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever waits raises it, nobody must


def _replace_contents(queue: asyncio.Queue[bytes | BaseException], item: BaseException) -> None:
    """Empty `queue` and leave `item` in it, without waiting."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(item)


@dataclass
class _Pending:
    """A manifest fetched from upstream and served from memory until its commit."""

    manifest: Manifest
    committed: asyncio.Task[None]


class Proxy:
    """The pull-through cache of one registry, for the names its upstreams cover."""

    def __init__(
        self, upstreams: tuple[Upstream, ...], store: Store, pools: Pools, max_manifest: int
    ) -> None:
        self.upstreams = upstreams
        self._store = store
        self._pools = pools
        self._max_manifest = max_manifest
        self._clients: dict[Upstream, UpstreamClient] = {}
        self._session: aiohttp.ClientSession | None = None
        self._checked: dict[tuple[str, str], float] = {}  # (name, tag): when upstream said
        self._tags: dict[tuple[str, str], str] = {}  # (name, tag): the digest it is pending as
        self._pending: dict[tuple[str, str], _Pending] = {}  # (name, digest)
        self._manifests: dict[tuple[str, str], asyncio.Future[Manifest]] = {}  # being fetched
        self._blobs: dict[tuple[str, str], BlobFetch] = {}  # (name, digest) being fetched
        self._tasks: set[asyncio.Task[Any]] = set()

    def upstream_of(self, name: str) -> Upstream | None:
        return upstream_of(self.upstreams, name)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._clients = {u: UpstreamClient(u, self._session) for u in self.upstreams}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # --- manifests ----------------------------------------------------------------------

    async def manifest(self, name: str, reference: str) -> Manifest:
        """The manifest `reference` of proxied repository `name`: stored, pending, or
        fetched now. A tag is asked upstream again once its TTL passed; if upstream cannot
        answer then, what is here is served."""
        upstream = self._upstream(name)
        local = await self._stored_manifest(name, reference)
        if is_digest(reference):  # never upstream twice: a digest names one manifest
            pending = self._pending.get((name, reference))
            if local is not None or pending is not None:
                return local or pending.manifest  # type: ignore[union-attr]
            return await self._fetch_manifest(upstream, name, reference, None)
        cached = self._pending_tag(name, reference) or local
        asked = self._checked.get((name, reference), -math.inf)
        if cached is not None and time.monotonic() - asked < upstream.ttl:
            return cached
        try:
            found = await self._client(upstream).head_manifest(upstream.remote(name), reference)
        except UpstreamFailed as e:
            if cached is None:
                raise
            log.warning("serving %s:%s as stored: %s", name, reference, e)
            return cached
        self._checked[(name, reference)] = time.monotonic()
        if cached is not None and found.digest == cached.digest:
            return cached
        return await self._fetch_manifest(upstream, name, found.digest or reference, reference)

    def _pending_tag(self, name: str, tag: str) -> Manifest | None:
        digest = self._tags.get((name, tag))
        pending = self._pending.get((name, digest)) if digest else None
        return pending.manifest if pending else None

    async def _fetch_manifest(
        self, upstream: Upstream, name: str, reference: str, tag: str | None
    ) -> Manifest:
        """Fetch `reference` (a digest, or a tag when upstream gave no digest), serve it
        from memory and have it committed, under `tag` if one was pulled."""
        key = (name, reference)
        if key in self._manifests:  # another client asked for it a moment ago
            return await asyncio.shield(self._manifests[key])
        fetching = self._spawn(self._fetch_and_keep(upstream, name, reference, tag))
        self._manifests[key] = fetching
        fetching.add_done_callback(lambda _: self._manifests.pop(key, None))
        return await asyncio.shield(fetching)

    async def _fetch_and_keep(
        self, upstream: Upstream, name: str, reference: str, tag: str | None
    ) -> Manifest:
        fetched = await self._client(upstream).get_manifest(
            upstream.remote(name), reference, self._max_manifest
        )
        try:
            parsed = manifests.parse(fetched.body, fetched.media_type, self._max_manifest)
        except (ManifestInvalid, ValueError) as e:
            detail = f"{upstream} sent {name}:{reference} that is no manifest: {e}"
            raise UpstreamFailed(detail) from None
        manifest = Manifest(fetched.digest, parsed.media_type, fetched.body, None)
        origin = f"{upstream.url}/{upstream.remote(name)}" + (
            f":{tag}" if tag else f"@{fetched.digest}"
        )
        if tag is not None:
            self._tags[(name, tag)] = fetched.digest
        key = (name, fetched.digest)
        if key not in self._pending:
            commit = self._commit(upstream, name, manifest, parsed, tag, origin)
            self._pending[key] = _Pending(manifest, self._spawn(commit))
        return manifest

    async def _commit(
        self,
        upstream: Upstream,
        name: str,
        manifest: Manifest,
        parsed: manifests.ParsedManifest,
        tag: str | None,
        origin: str,
    ) -> None:
        """Store what `manifest` needs from upstream, then commit it as a push would."""
        try:
            # An index: each image it lists, committed first.
            await asyncio.gather(*(self._committed(name, str(c.digest)) for c in parsed.children))
            # The client that pulls this asks for its blobs now: a fetch it joins from the
            # start streams to it, one it finds under way it would have to wait for.
            await asyncio.sleep(CLIENTS_FIRST_SECONDS)
            slots = asyncio.Semaphore(PARALLEL_BLOBS)

            async def fetch(digest: str) -> None:
                async with slots:
                    await self.stored_blob(upstream, name, digest)

            await asyncio.gather(*(fetch(str(ref.digest)) for ref in parsed.blobs))
            provenance = [("Proxied-From", origin), ("Upstream-Digest", manifest.digest)]
            await self._pools.write(
                self._store.put_manifest,
                name,
                tag or manifest.digest,
                manifest.body,
                manifest.media_type,
                self._max_manifest,
                provenance,
                repository=name,
            )
            log.info("stored %s from %s", f"{name}:{tag}" if tag else name, origin)
        except (StoreError, OSError) as e:
            log.warning("could not store %s from %s: %s", name, origin, e)
            raise
        finally:
            self._pending.pop((name, manifest.digest), None)
            if tag is not None and self._tags.get((name, tag)) == manifest.digest:
                del self._tags[(name, tag)]

    async def _committed(self, name: str, digest: str) -> None:
        """Return once manifest `digest` of `name` is stored, fetching it if need be."""
        await self.manifest(name, digest)
        pending = self._pending.get((name, digest))
        if pending is not None:
            await asyncio.shield(pending.committed)

    async def _stored_manifest(self, name: str, reference: str) -> Manifest | None:
        try:
            return await self._pools.read(self._store.get_manifest, name, reference)
        except (ManifestUnknown, NameUnknown):
            return None

    async def tags(self, name: str) -> list[str]:
        """Upstream's tags of `name`, sorted; those stored here when upstream cannot say."""
        upstream = self._upstream(name)
        try:
            return sorted(await self._client(upstream).tags(upstream.remote(name)))
        except UpstreamFailed as e:
            log.warning("listing the tags of %s as stored: %s", name, e)
            return await self._pools.read(self._store.tags, name)

    # --- blobs ---------------------------------------------------------------------------

    async def blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse | None:
        """Serve a blob proxied repository `name` lacks: streamed from upstream as it is
        stored, or None once it is stored (the caller serves it from the store then)."""
        upstream = self._upstream(name)
        if await self._has_blob(name, digest):
            return None
        if request.method == "HEAD":  # the size is all it needs: nothing to store
            response = web.StreamResponse(headers=_blob_headers(digest))
            response.content_length = await self._client(upstream).head_blob(
                upstream.remote(name), digest
            )
            return response
        fetch = self._blob_fetch(upstream, name, digest)
        queue = None if "Range" in request.headers else fetch.listen()
        if queue is None:  # a range, or the fetch sends already: read what gets stored
            await asyncio.shield(fetch.done)
            return None
        try:
            await asyncio.shield(fetch.started)
            response = web.StreamResponse(headers=_blob_headers(digest))
            if fetch.size is not None:
                response.content_length = fetch.size
            await response.prepare(request)
            while (piece := await queue.get()) != END:
                if isinstance(piece, BaseException):  # the body started: drop the connection
                    log.warning("cut off %s@%s from %s: %s", name, digest, upstream, piece)
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write(piece)
            await response.write_eof()
            return response
        finally:
            fetch.leave(queue)

    async def stored_blob(self, upstream: Upstream, name: str, digest: str) -> None:
        """Return once `name` has blob `digest`, fetching it from upstream if need be."""
        if not await self._has_blob(name, digest):
            await asyncio.shield(self._blob_fetch(upstream, name, digest).done)

    def _blob_fetch(self, upstream: Upstream, name: str, digest: str) -> BlobFetch:
        key = (name, digest)
        fetch = self._blobs.get(key)
        if fetch is None:
            fetch = self._blobs[key] = BlobFetch()
            task = self._spawn(self._fetch_blob(upstream, name, digest, fetch))
            task.add_done_callback(lambda _: self._blobs.pop(key, None))
        return fetch

    async def _fetch_blob(
        self, upstream: Upstream, name: str, digest: str, fetch: BlobFetch
    ) -> None:
        """Stream the blob from upstream into an upload of `name` and to `fetch`'s
        listeners, holding the last piece back until its digest is checked."""
        write = self._writer(name)
        try:
            async with self._client(upstream).blob(upstream.remote(name), digest) as stream:
                fetch.size = stream.size
                fetch.started.set_result(None)
                upload_id = await write(self._store.start_upload, name)
                try:
                    await self._receive(write, name, upload_id, stream, fetch)
                    await write(self._store.finish_upload, name, upload_id, digest)
                except BaseException:
                    with contextlib.suppress(StoreError):
                        await write(self._store.cancel_upload, name, upload_id)
                    raise
        except DigestInvalid:  # the store checked the bytes as it wrote them
            error = UpstreamFailed(
                f"{upstream} sent a blob that does not match its digest {digest}"
            )
            log.warning("%s", error)
            fetch.fail(error)
            raise error from None
        except BaseException as e:
            fetch.fail(e)
            raise
        if fetch.held:
            await fetch.send(fetch.held)
        await fetch.send(END)
        fetch.done.set_result(None)

    async def _receive(
        self,
        write: Callable[..., Awaitable[Any]],
        name: str,
        upload_id: str,
        stream: BlobStream,
        fetch: BlobFetch,
    ) -> None:
        """The stream into the upload, each piece also sent to the listeners one piece
        later (the last is sent only once the digest is checked). Piece k+1 is received
        while piece k is stored and piece k-1 sent: one after the other, a proxied pull
        ran at half the upstream's speed."""
        writer = await write(self._store.open_upload, name, upload_id, None, stream.size)
        busy: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        busy.set_result(None)
        try:
            # The store checks the digest as it stores: once is enough on two cores.
            async for piece in stream.chunks(PIECE, verify=False):
                await busy
                work = [write(writer.write, piece)]
                if fetch.held:
                    work.append(fetch.send(fetch.held))
                busy = asyncio.gather(*work)
                fetch.held = piece
            await busy
        finally:
            with contextlib.suppress(Exception):  # a failed write ends before the close
                await busy
            await write(writer.close)

    async def _has_blob(self, name: str, digest: str) -> bool:
        try:
            await self._pools.read(self._store.stat_blob, name, digest)
            return True
        except (BlobUnknown, NameUnknown):
            return False

    # --- helpers ------------------------------------------------------------------------

    def _upstream(self, name: str) -> Upstream:
        upstream = self.upstream_of(name)
        assert upstream is not None, f"{name} is not proxied"
        return upstream

    def _client(self, upstream: Upstream) -> UpstreamClient:
        return self._clients[upstream]

    def _writer(self, name: str) -> Callable[..., Awaitable[Any]]:
        def write(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
            return self._pools.write(fn, *args, repository=name)

        return write

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `work` whoever waits for it; its failure is logged by it, not raised here."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task


def _blob_headers(digest: str) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
    }
