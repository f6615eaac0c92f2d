"""Notification webhooks (README "Events"): push, pull and delete events, sent as CNCF
Distribution sends them (an envelope `{"events": [...]}` of up to BATCH events a POST),
each push and delete with the git commit that made it.

Pushes and deletes are heard from the store (Store.on_commit), so every commit a
client, the pull-through proxy or retention makes is told, once its branch has it;
pulls are seen by a middleware after a manifest or blob GET succeeded. Each webhook has
a bounded queue and a sender task of its own: a receiver that is slow, down or refusing
never holds up a request, and what it misses is dropped and counted, never the
registry's data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from registry import blobs, manifests
from registry.auth.middleware import caller_of
from registry.common import CONFIG, POOLS, STORE
from registry.pools import Pools
from registry.webhooks import Webhook
from storage import Store
from storage.errors import StoreError
from storage.types import Committed

log = logging.getLogger("hroot.events")

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
QUEUE_SIZE = 10_000  # events waiting per webhook; beyond it the oldest are dropped
BATCH = 100  # events in one POST at most
RETRY_FOR = 300.0  # seconds a batch is retried before it is dropped
FIRST_BACKOFF = 0.5  # seconds before the first retry, doubled up to MAX_BACKOFF
MAX_BACKOFF = 30.0
DRAIN_TIMEOUT = 5.0  # seconds the queues get to empty at shutdown
WARN_EVERY = 10.0  # seconds between two warnings about dropped events
USER_AGENT_LENGTH = 256  # a client's User-Agent is cut to this many characters

Event = dict[str, Any]


class Sink:
    """One webhook: a bounded queue of events and the task that POSTs them in batches."""

    def __init__(
        self,
        webhook: Webhook,
        queue_size: int = QUEUE_SIZE,
        retry_for: float = RETRY_FOR,
        before_send: Callable[[list[Event]], Awaitable[None]] | None = None,
    ) -> None:
        self.webhook = webhook
        self.dropped = 0  # events dropped: oldest of a full queue, or given up after retries
        self.delivered = 0
        self._queue: collections.deque[Event] = collections.deque(maxlen=queue_size)
        self._retry_for = retry_for
        self._before_send = before_send  # async fn(batch): fills in what is known late
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._warned = -WARN_EVERY
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=f"webhook {self.webhook}")

    def put(self, event: Event) -> None:
        """Queue `event` without waiting; a full queue drops its oldest one."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warning(
                    "webhook %s: queue full (%d events), dropping the oldest; %d dropped so far",
                    self.webhook,
                    self._queue.maxlen,
                    self.dropped,
                )
        self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    async def close(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Give the queue `drain_timeout` seconds to be sent, then stop."""
        if self._task is None or self._session is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        except TimeoutError:
            log.warning(
                "webhook %s: %d event(s) not sent at shutdown", self.webhook, len(self._queue)
            )
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._session.close()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            if self._before_send is not None:
                await self._before_send(batch)
            await self._deliver(batch)

    async def _deliver(self, batch: list[Event]) -> None:
        """POST `batch`, retrying a receiver that is away or failing (connection refused,
        a timeout, 5xx, 429) with backoff for up to `retry_for` seconds; a refusal
        (another 4xx) is not retried: the same envelope would be refused again."""
        assert self._session is not None
        body = json.dumps({"events": batch}, separators=(",", ":")).encode()
        headers = {"Content-Type": MEDIA_TYPE, **dict(self.webhook.headers)}
        timeout = aiohttp.ClientTimeout(total=self.webhook.timeout)
        give_up = time.monotonic() + self._retry_for
        delay, failing_since = FIRST_BACKOFF, None
        while True:
            try:
                async with self._session.post(
                    self.webhook.url, data=body, headers=headers, timeout=timeout
                ) as response:
                    status = response.status
                why = f"status {status}"
            except TimeoutError:
                status, why = None, f"no answer within {self.webhook.timeout:g} s"
            except aiohttp.ClientError as exc:  # its text may hold the URL: name the kind only
                status, why = None, _reason(exc)
            if status is not None and status < 300:
                self.delivered += len(batch)
                if failing_since is not None:
                    log.info(
                        "webhook %s: delivering again after %.1f s",
                        self.webhook,
                        time.monotonic() - failing_since,
                    )
                return
            if status is not None and status < 500 and status != 429:
                self._drop(batch, f"refused them ({why})")
                return
            if failing_since is None:
                failing_since = time.monotonic()
                log.warning("webhook %s: %s; retrying", self.webhook, why)
            if time.monotonic() + delay > give_up:
                self._drop(batch, f"failed for {self._retry_for:g} s ({why})")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _drop(self, batch: list[Event], why: str) -> None:
        self.dropped += len(batch)
        log.warning("webhook %s %s: %d event(s) dropped", self.webhook, why, len(batch))


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__


@dataclass(frozen=True)
class _Who:
    """Who asked, as Distribution's `request` and `actor` say it: of the headers only the
    user agent, so no credentials."""

    request: dict[str, str]
    actor: dict[str, str]
    base_url: str  # scheme and host the client used, for a target's `url`

    @classmethod
    def of(cls, request: web.Request) -> _Who:
        user = caller_of(request).user
        record = {
            "id": str(uuid.uuid4()),
            "addr": request.remote or "",
            "host": request.host,
            "method": request.method,
            "useragent": request.headers.get("User-Agent", "")[:USER_AGENT_LENGTH],
        }
        return cls(record, {"name": user} if user else {}, f"{request.scheme}://{request.host}")


@dataclass
class _Write:
    """A push or delete request under way, for the commit it makes to name its request."""

    repository: str
    route: str  # "manifests" or "blobs"
    reference: str  # a tag or a digest
    who: _Who
    claimed: bool = False


class Events:
    """The webhooks of one app: turns commits and pulls into events for their sinks."""

    def __init__(
        self,
        webhooks: tuple[Webhook, ...],
        store: Store,
        pools: Pools,
        port: int,
        queue_size: int = QUEUE_SIZE,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self._store = store
        self._pools = pools
        self.sinks = [Sink(w, queue_size, retry_for, self._fill_sizes) for w in webhooks]
        self._source = {"addr": f"{socket.gethostname()}:{port}", "instanceID": str(uuid.uuid4())}
        self._writes: list[_Write] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        store.on_commit(self._heard)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sink in self.sinks:
            sink.start()

    async def close(self) -> None:
        self._loop = None  # the store, which may outlive the app, is heard no more
        await asyncio.gather(*(sink.close() for sink in self.sinks))

    # --- what happened ----------------------------------------------------------------
    def _heard(self, committed: Committed) -> None:
        """Store.on_commit, in the writing thread: over to the event loop, at once."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._committed, committed)

    def _committed(self, c: Committed) -> None:
        """The events of a commit (docs/format.md §4), with the request that made it, if
        one is under way: its thread told the store's listeners before it returned."""
        kind = c.summary.split(" ", 2)[:2]
        digest, tag = c.trailer("Manifest-Digest"), c.trailer("Tag")
        if kind[0] == "push" and digest is not None:
            target = {"mediaType": c.trailer("Media-Type"), "digest": digest, "tag": tag}
            self._emit("push", c, target, "manifests", tag, digest)
        elif kind == ["delete", "manifest"] and digest is not None:
            self._emit("delete", c, {"digest": digest}, "manifests", digest)
        elif kind == ["delete", "tag"] and tag is not None:
            self._emit("delete", c, {"digest": digest, "tag": tag}, "manifests", tag)
        elif kind == ["delete", "blob"] and (blob := c.trailer("Blob-Digest")) is not None:
            self._emit("delete", c, {"digest": blob}, "blobs", blob)
        elif kind == ["drop", "untagged"]:  # retention: no request made it
            for key, value in c.trailers:
                if key == "Manifest-Digest":
                    self._emit("delete", c, {"digest": value}, "manifests")

    def _emit(
        self, action: str, c: Committed, target: Event, route: str, *references: str | None
    ) -> None:
        write = self._claim(c.repository, route, references)
        who = write.who if write is not None else None
        target = {k: v for k, v in target.items() if v is not None}
        target["repository"] = c.repository
        if who is not None and "digest" in target:
            target["url"] = f"{who.base_url}/v2/{c.repository}/{route}/{target['digest']}"
        self.put(self._event(action, target, who, c.commit))

    def _claim(
        self, repository: str, route: str, references: tuple[str | None, ...]
    ) -> _Write | None:
        for write in self._writes:
            if (
                not write.claimed
                and write.repository == repository
                and write.route == route
                and write.reference in references
            ):
                write.claimed = True
                return write
        return None

    def pulled(self, request: web.Request, route: str, response: web.StreamResponse) -> None:
        """A GET of a manifest or blob answered 200 or 206: a pull event."""
        name = request.match_info["name"]
        if route == "manifests":
            digest = response.headers.get("Docker-Content-Digest", "")
            media_type = response.headers.get("Content-Type", "")
            size = response.content_length or 0
        else:
            digest, media_type = request.match_info["digest"], "application/octet-stream"
            whole = response.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(whole) if whole.isdigit() else response.content_length or 0
        target: Event = {"mediaType": media_type, "size": size, "digest": digest, "length": size}
        who = _Who.of(request)
        target |= {"repository": name, "url": f"{who.base_url}/v2/{name}/{route}/{digest}"}
        reference = request.match_info.get("reference", "")
        if route == "manifests" and reference != digest:
            target["tag"] = reference
        self.put(self._event("pull", target, who, None))

    def _event(self, action: str, target: Event, who: _Who | None, commit: str | None) -> Event:
        event: Event = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "action": action,
            "target": target,
            "request": who.request if who is not None else {},
            "actor": who.actor if who is not None else {},
            "source": self._source,
        }
        if commit is not None:
            event["commit"] = commit
        return event

    def put(self, event: Event) -> None:
        for sink in self.sinks:
            if event["action"] in sink.webhook.actions:
                sink.put(event)

    async def _fill_sizes(self, batch: list[Event]) -> None:
        """A push's manifest size, which its commit does not say: read once, when sent."""
        wanted = [e["target"] for e in batch if e["action"] == "push" and "size" not in e["target"]]
        if wanted:
            await self._pools.read(self._sizes, wanted)

    def _sizes(self, targets: list[Event]) -> None:
        for target in targets:
            try:
                size = self._store.stat_blob(target["repository"], target["digest"]).size
            except StoreError:  # deleted since: the event goes without a size
                continue
            target["size"] = target["length"] = size

    # --- requests under way -----------------------------------------------------------
    def writing(self, request: web.Request, route: str) -> _Write:
        info = request.match_info
        reference = info.get("reference") or info.get("digest") or ""
        write = _Write(info["name"], route, reference, _Who.of(request))
        self._writes.append(write)
        return write

    def written(self, write: _Write) -> None:
        self._writes.remove(write)


EVENTS = web.AppKey("events", Events)

# The routes whose requests make events, by handler.
_ROUTES = {
    manifests.get_manifest: "manifests",
    manifests.put_manifest: "manifests",
    manifests.delete_manifest: "manifests",
    blobs.get_blob: "blobs",
    blobs.delete_blob: "blobs",
}


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pull events after a GET answered; a PUT or DELETE is noted while it runs, so that
    the event of the commit it makes names its request and user."""
    route = _ROUTES.get(request.match_info.handler)
    if route is None or request.method == "HEAD":
        return await handler(request)
    events = request.app[EVENTS]
    if request.method == "GET":
        response = await handler(request)
        if response.status in (200, 206):
            events.pulled(request, route, response)
        return response
    write = events.writing(request, route)
    try:
        return await handler(request)
    finally:
        events.written(write)


def setup(app: web.Application) -> None:
    """Send `app`'s events to its config's webhooks, if it has any."""
    config = app[CONFIG]
    if not config.webhook:
        return
    app[EVENTS] = Events(config.webhook, app[STORE], app[POOLS], config.port)
    app.middlewares.append(observe)
    app.cleanup_ctx.append(_sending)


async def _sending(app: web.Application) -> AsyncIterator[None]:
    app[EVENTS].start()
    yield
    await app[EVENTS].close()
