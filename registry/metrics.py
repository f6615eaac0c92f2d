"""Prometheus metrics of one app at /metrics (README "Monitoring"), with prometheus-client.

Every app has a CollectorRegistry of its own rather than the library's global one, so that
several apps in one process (tests, a follower beside its primary) never share or clash.
What the API does is counted by a middleware around everything else, so it sees the status
the client got: requests by method, route and status, their latency, the bytes in and out,
and pushes, pulls and deletes. What is stored is measured when /metrics is asked for, in a
thread of the reads pool, never on the event loop: the store's objects (counted again
every SIZES_SECONDS at most: 60,000 loose objects take 0.14 s), the upload spools, a
follower's lag, git's maintenance runs and the server's gc runs. Commits, and the images
a pull-through proxy stored, are heard from the store (Store.on_commit).
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from registry.common import POOLS, STORE
from registry.events import EVENTS, Events, Sink
from registry.follow import FOLLOWER, Follower
from registry.housekeeping import GC_RUNS, GcRuns
from storage import Store, gitcli
from storage.errors import GitFailed
from storage.types import Committed

# Labels of requests whose method or path is none of the API's: one series each, not one
# per string a client (or a scanner) sent.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"  # the route label of a path no route matches (a 404 or 405)
ABORTED = "aborted"  # the status label of a request whose client left or whose handler broke
# Seconds: a manifest takes milliseconds, a big blob minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# What a successful request of these routes is, to the people who pushed and pulled.
MANIFEST = "/v2/{name}/manifests/{reference}"
ACTIONS = {
    ("PUT", MANIFEST): "push",
    ("GET", MANIFEST): "pull",
    ("DELETE", MANIFEST): "delete",
    ("DELETE", "/v2/{name}/blobs/{digest}"): "delete",
}
SIZES_SECONDS = 30.0  # how long a measure of the store's objects is served again
COUNT_SECONDS = 60.0  # the longest `git count-objects` may take


@dataclass(frozen=True)
class ObjectSizes:
    """What objects/ holds: loose objects and packs, in objects and in bytes on disk."""

    loose: int
    loose_bytes: int
    packed: int
    packed_bytes: int


def measure_objects(gitdir: Path) -> ObjectSizes:
    """From `git count-objects -v`, whose sizes are in KiB."""
    counted = gitcli.count_objects(gitdir, timeout=COUNT_SECONDS)
    return ObjectSizes(
        counted["count"],
        counted["size"] * 1024,
        counted["in-pack"],
        counted["size-pack"] * 1024,
    )


class StoreCollector(Collector):
    """The store's repositories, objects and upload spools, read when collected."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._sizes: tuple[float, ObjectSizes] | None = None  # (time.monotonic(), measure)
        self._lock = threading.Lock()  # one count at a time; a second scrape waits for it

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            sizes = self._object_sizes()
            repositories = len(self._store.repositories())
            uploads = len(os.listdir(self._store.path / "hroot" / "uploads"))
        except (OSError, subprocess.TimeoutExpired, GitFailed):  # gone: /ready says so
            return
        yield GaugeMetricFamily("hroot_repositories", "Repositories (branches)", repositories)
        objects = GaugeMetricFamily(
            "hroot_store_objects", "Git objects in the store", labels=["state"]
        )
        objects.add_metric(["loose"], sizes.loose)
        objects.add_metric(["packed"], sizes.packed)
        yield objects
        size = GaugeMetricFamily(
            "hroot_store_bytes", "Bytes of git objects on disk", labels=["state"], unit="bytes"
        )
        size.add_metric(["loose"], sizes.loose_bytes)
        size.add_metric(["packed"], sizes.packed_bytes)
        yield size
        yield GaugeMetricFamily(
            "hroot_uploads_in_progress",
            "Upload sessions with a spool in the store: neither finished, cancelled nor "
            "removed by gc",
            uploads,
        )

    def _object_sizes(self) -> ObjectSizes:
        with self._lock:
            now = time.monotonic()
            if self._sizes is None or now - self._sizes[0] >= SIZES_SECONDS:
                self._sizes = (now, measure_objects(self._store.path))
            return self._sizes[1]


class UpkeepCollector(Collector):
    """git's own maintenance runs and the server's gc runs, read when collected."""

    def __init__(self, store: Store, gc_runs: GcRuns) -> None:
        self._store = store
        self._gc_runs = gc_runs

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "hroot_git_maintenance_runs",
            "`git gc --auto` runs the store started after many commits or bytes",
            self._store.maintenance_runs,
        )
        runs = CounterMetricFamily(
            "hroot_gc_runs", "Runs of the server's periodic gc, by outcome", labels=["outcome"]
        )
        runs.add_metric(["succeeded"], self._gc_runs.succeeded)
        runs.add_metric(["failed"], self._gc_runs.failed)
        yield runs
        yield CounterMetricFamily(
            "hroot_gc_seconds", "Seconds the server's periodic gc runs took", self._gc_runs.seconds
        )


class WebhookCollector(Collector):
    """Each webhook's events delivered, dropped and waiting, read when collected."""

    def __init__(self, sinks: list[Sink]) -> None:
        self._sinks = sinks

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        help_ = "Events of each webhook (its URL without credentials)"
        delivered = CounterMetricFamily(
            "hroot_webhook_events_delivered", f"{help_} its endpoint accepted", labels=["webhook"]
        )
        dropped = CounterMetricFamily(
            "hroot_webhook_events_dropped",
            f"{help_} dropped: the oldest of a full queue, or given up after retries",
            labels=["webhook"],
        )
        waiting = GaugeMetricFamily(
            "hroot_webhook_events_queued", f"{help_} waiting to be sent", labels=["webhook"]
        )
        for sink in self._sinks:
            name = [str(sink.webhook)]
            delivered.add_metric(name, sink.delivered)
            dropped.add_metric(name, sink.dropped)
            waiting.add_metric(name, sink.queued)
        yield from (delivered, dropped, waiting)


class Metrics:
    """The app's registry and the series the middleware and the store's listener move."""

    def __init__(
        self,
        store: Store,
        follower: Follower | None,
        gc_runs: GcRuns,
        events: Events | None = None,
    ) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "hroot_http_requests",
            "HTTP requests answered, by method, route (its pattern) and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "hroot_http_request_duration_seconds",
            "Seconds from a request's arrival to its handler's end (a streamed body included)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "hroot_http_received_bytes",
            "Request body bytes received, by route",
            ["route"],
            unit="bytes",
            registry=registry,
        )
        self.sent = Counter(
            "hroot_http_sent_bytes",
            "Response bytes sent, by route: bodies, and the headers of streamed answers",
            ["route"],
            unit="bytes",
            registry=registry,
        )
        self.actions = Counter(
            "hroot_actions",
            "Manifests pushed and pulled (GET), manifests and blobs deleted",
            ["action"],
            registry=registry,
        )
        for action in sorted(set(ACTIONS.values())):
            self.actions.labels(action)  # present at 0 from the start, for rate()
        self.commits = Counter("hroot_commits", "Commits on repository branches", registry=registry)
        self.proxied = Counter(
            "hroot_proxy_images_stored",
            "Images a pull-through proxy fetched from upstream and committed",
            registry=registry,
        )
        registry.register(StoreCollector(store))
        registry.register(UpkeepCollector(store, gc_runs))
        if events is not None:
            registry.register(WebhookCollector(events.sinks))
        if follower is not None:
            lag = Gauge(
                "hroot_follower_lag_seconds",
                "Seconds since the last fetch from the primary that succeeded (+Inf before it)",
                registry=registry,
            )
            lag.set_function(lambda: _lag(follower))

    def committed(self, commit: Committed) -> None:
        """Store.on_commit listener, in the writing thread (prometheus-client locks)."""
        self.commits.inc()
        if commit.trailer("Proxied-From") is not None:
            self.proxied.inc()

    def observe(
        self,
        request: web.Request,
        status: str,
        response: web.StreamResponse | None,
        seconds: float,
    ) -> None:
        method = request.method if request.method in METHODS else OTHER_METHOD
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        self.requests.labels(method, route, status).inc()
        self.latency.labels(method, route).observe(seconds)
        self.received.labels(route).inc(request.content.total_bytes)
        self.sent.labels(route).inc(_sent(request, response))
        action = ACTIONS.get((method, route))
        if action is not None and status.startswith("2"):
            self.actions.labels(action).inc()


def _sent(request: web.Request, response: web.StreamResponse | None) -> int:
    """Bytes of the answer: a streamed one has gone out through the request's writer by
    now; any other goes out after the middleware, as the body it holds (none for HEAD)."""
    if response is None or response.prepared:
        return request.writer.output_size
    if request.method == "HEAD" or not isinstance(response, web.Response):
        return 0
    return response.content_length or 0


def _lag(follower: Follower) -> float:
    return math.inf if follower.last_fetched is None else time.time() - follower.last_fetched


METRICS = web.AppKey("metrics", Metrics)


def setup(app: web.Application) -> None:
    """Measure `app`'s requests from outside every other middleware, and serve /metrics."""
    app[METRICS] = metrics = Metrics(app[STORE], app.get(FOLLOWER), app[GC_RUNS], app.get(EVENTS))
    app[STORE].on_commit(metrics.committed)
    app.middlewares.insert(0, measure)
    app.router.add_routes(routes(app))


def routes(app: web.Application) -> list[web.RouteDef]:
    """/metrics of `app`: for `app` itself, or for a separate app on config.metrics_listen."""

    async def serve_metrics(request: web.Request) -> web.Response:
        body = await app[POOLS].read(generate_latest, app[METRICS].registry)
        return web.Response(
            body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
        )

    return [web.get("/metrics", serve_metrics)]


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = ABORTED
    response = None
    try:
        response = await handler(request)
        status = str(response.status)
        return response
    except web.HTTPException as exc:  # a redirect, which handle_errors lets through
        status = str(exc.status)
        raise
    finally:
        request.app[METRICS].observe(request, status, response, time.perf_counter() - started)
