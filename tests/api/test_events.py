"""Notification webhooks (registry.events) against real receivers: small aiohttp apps on
loopback that record what they get, answer late, or are not there at all."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from registry.events import MEDIA_TYPE, Sink
from registry.metrics import WebhookCollector
from registry.upstreams import Upstream
from registry.webhooks import Webhook
from storage import Store, names
from tests.api.helpers import Api
from tests.api.test_metrics import scrape, value
from tests.documents import digest_of

MakeApi = Callable[..., Awaitable[Api]]


@dataclass
class Receiver:
    """A webhook receiver on loopback: every envelope it got, with its headers."""

    url: str
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    delay: float = 0.0  # seconds before it answers
    gate: asyncio.Event | None = None  # when set: answers once the test opens it
    got: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in envelope["events"]]

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The events once at least `count` have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                await asyncio.sleep(0.02)
        return self.events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def receive() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """Start receivers: receive(port=…, delay=…, gate=…)."""
    runners: list[web.AppRunner] = []

    async def start(port: int = 0, **behaviour: Any) -> Receiver:
        receiver = Receiver("", **behaviour)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            receiver.got.set()
            if receiver.gate is not None:
                await receiver.gate.wait()
            await asyncio.sleep(receiver.delay)
            receiver.bodies.append(body)
            receiver.headers.append(dict(request.headers))
            receiver.envelopes.append(json.loads(body))
            return web.Response()

        app = web.Application()
        app.router.add_post("/events", handle)
        runner = web.AppRunner(app, shutdown_timeout=0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


def rev_parse(store: Store, name: str) -> str:
    ref = names.branch_ref(name).decode()
    return subprocess.run(
        ["git", "--git-dir", store.path, "rev-parse", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def subject_of(store: Store, commit: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", store.path, "show", "-s", "--format=%s", commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


async def test_push_pull_and_delete_events_carry_their_commit(
    make_api: MakeApi, receive: Callable[..., Awaitable[Receiver]], store: Store
) -> None:
    everything, pushes = await receive(), await receive()
    api = await make_api(
        webhook=(
            Webhook(everything.url, (("X-Token", "for the receiver"),), 5.0),
            Webhook(pushes.url, actions=frozenset({"push"})),
        )
    )
    client = api.client
    image = await api.push_image("team/app", "v1", layers=(b"layer one", b"layer two"))
    pushed_at = rev_parse(store, "team/app")
    secret = {"Authorization": "Bearer do-not-tell", "User-Agent": "events-test/1"}
    resp = await client.get("/v2/team/app/manifests/v1", headers=secret)
    assert resp.status == 200
    assert (await client.head("/v2/team/app/manifests/v1")).status == 200  # a check, no pull
    resp = await client.get(f"/v2/team/app/blobs/{digest_of(b'layer one')}")
    assert await resp.read() == b"layer one"
    resp = await client.delete("/v2/team/app/manifests/v1")
    assert resp.status == 202
    untagged_at = rev_parse(store, "team/app")
    resp = await client.delete(f"/v2/team/app/blobs/{digest_of(b'layer two')}")
    assert resp.status == 202
    blob_gone_at = rev_parse(store, "team/app")
    resp = await client.delete(f"/v2/team/app/manifests/{image.digest}")
    assert resp.status == 202
    manifest_gone_at = rev_parse(store, "team/app")

    push, pull, blob_pull, tag_delete, blob_delete, manifest_delete = await everything.wait_for(6)
    assert [e["action"] for e in (await pushes.wait_for(1))] == ["push"]
    await asyncio.sleep(0.3)
    assert len(everything.events) == 6 and len(pushes.events) == 1  # nothing more came
    samples = await scrape(api)
    for receiver, count in ((everything, 6), (pushes, 1)):
        url = receiver.url
        assert value(samples, "hroot_webhook_events_delivered_total", webhook=url) == count
        assert value(samples, "hroot_webhook_events_queued", webhook=url) == 0
        assert ("hroot_webhook_events_dropped_total", frozenset({("webhook", url)})) in samples

    for headers in everything.headers:
        assert headers["Content-Type"] == MEDIA_TYPE
        assert headers["X-Token"] == "for the receiver"
    assert all(b"do-not-tell" not in body for body in everything.bodies)

    host = f"{client.server.host}:{client.server.port}"
    assert push["action"] == "push"
    assert push["commit"] == pushed_at
    assert subject_of(store, pushed_at) == f"push team/app:v1 {image.digest}"
    assert push["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest,
        "size": len(image.manifest),
        "length": len(image.manifest),
        "repository": "team/app",
        "tag": "v1",
        "url": f"http://{host}/v2/team/app/manifests/{image.digest}",
    }
    assert push["request"]["method"] == "PUT"
    assert push["request"]["addr"] == "127.0.0.1"
    assert push["request"]["host"] == host
    assert push["actor"] == {}
    assert set(push["source"]) == {"addr", "instanceID"}
    assert set(push) == {
        "id",
        "timestamp",
        "action",
        "target",
        "request",
        "actor",
        "source",
        "commit",
    }

    assert pull["action"] == "pull" and "commit" not in pull
    assert pull["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": len(image.manifest),
        "digest": image.digest,
        "length": len(image.manifest),
        "repository": "team/app",
        "url": f"http://{host}/v2/team/app/manifests/{image.digest}",
        "tag": "v1",
    }
    assert pull["request"]["method"] == "GET"
    assert pull["request"]["useragent"] == "events-test/1"
    assert blob_pull["action"] == "pull"
    assert blob_pull["target"]["digest"] == digest_of(b"layer one")
    assert blob_pull["target"]["size"] == len(b"layer one")
    assert blob_pull["target"]["mediaType"] == "application/octet-stream"

    assert tag_delete["action"] == "delete" and tag_delete["commit"] == untagged_at
    assert tag_delete["target"]["tag"] == "v1"
    assert tag_delete["target"]["digest"] == image.digest
    assert tag_delete["request"]["method"] == "DELETE"
    assert blob_delete["commit"] == blob_gone_at
    assert blob_delete["target"]["digest"] == digest_of(b"layer two")
    assert subject_of(store, blob_gone_at).startswith("delete blob team/app@")
    assert manifest_delete["commit"] == manifest_gone_at
    assert manifest_delete["target"] == {
        "digest": image.digest,
        "repository": "team/app",
        "url": f"http://{host}/v2/team/app/manifests/{image.digest}",
    }
    assert len({e["id"] for e in everything.events}) == 6
    assert len({e["source"]["instanceID"] for e in everything.events}) == 1


async def test_a_proxied_image_is_a_push_event(
    aiohttp_client: AiohttpClient,
    make_api: MakeApi,
    receive: Callable[..., Awaitable[Receiver]],
    store: Store,
    tmp_path: Path,
) -> None:
    upstream_store = Store.open(tmp_path / "upstream.git")
    try:
        app = create_app(Config(data=upstream_store.path), upstream_store)
        upstream = Api(await aiohttp_client(app))
        image = await upstream.push_image("lib/app", "v1")
        server = upstream.client.server
        receiver = await receive()
        proxy = await make_api(
            upstream=(Upstream(f"http://{server.host}:{server.port}", "up"),),
            webhook=(Webhook(receiver.url),),
        )
        resp = await proxy.client.get("/v2/up/lib/app/manifests/v1")
        assert resp.status == 200
        events = await receiver.wait_for(2)
    finally:
        upstream_store.close()
    (push,) = [e for e in events if e["action"] == "push"]
    assert push["commit"] == rev_parse(store, "up/lib/app")
    assert push["target"]["digest"] == image.digest
    assert push["target"]["tag"] == "v1"
    assert push["target"]["size"] == len(image.manifest)


async def timed_pushes(api: Api, name: str, first: int, count: int) -> list[float]:
    """Seconds each of `count` pushes of a new tag took, blobs and manifest."""
    took = []
    for n in range(first, first + count):
        start = time.perf_counter()
        await api.push_image(name, f"v{n}", layers=(f"{name} {n}".encode(),))
        took.append(time.perf_counter() - start)
    return took


# A push waits for no receiver: with one that is down or answers after 10 s, no push takes
# longer than SLOWEST, and their median stays within this of the median without webhooks.
SLOWEST = 3.0
MEDIAN_FACTOR = 3.0
MEDIAN_SLACK = 0.1


async def test_a_dead_or_slow_receiver_slows_no_push(
    make_api: MakeApi, receive: Callable[..., Awaitable[Receiver]], store: Store
) -> None:
    slow = await receive(delay=10.0)
    apis = {
        "plain": await make_api(),
        "dead": await make_api(webhook=(Webhook(f"http://127.0.0.1:{free_port()}/events"),)),
        "slow": await make_api(webhook=(Webhook(slow.url, timeout=30.0),)),
    }
    took: dict[str, list[float]] = {name: [] for name in apis}
    for first in range(0, 12, 4):  # in turns, so that a busy moment falls on all three
        for name, api in apis.items():
            took[name] += await timed_pushes(api, name, first, 4)
    medians = {name: round(statistics.median(t), 3) for name, t in took.items()}
    print(f"push medians (s): {medians}; slowest: {max(took['dead'] + took['slow']):.3f}")
    for name in ("dead", "slow"):
        assert max(took[name]) < SLOWEST, took
        assert medians[name] < medians["plain"] * MEDIAN_FACTOR + MEDIAN_SLACK, medians
        # every push is stored, whatever became of its event
        assert store.tags(name) == sorted(f"v{n}" for n in range(12))
    assert slow.got.is_set()  # the slow one was sent to, and has not answered yet


async def test_retries_deliver_once_the_receiver_is_back(
    make_api: MakeApi,
    receive: Callable[..., Awaitable[Receiver]],
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    api = await make_api(webhook=(Webhook(f"http://127.0.0.1:{port}/events"),))
    with caplog.at_level(logging.WARNING, "hroot.events"):
        await api.push_image("later", "v1")
        async with asyncio.timeout(10):
            while "retrying" not in caplog.text:
                await asyncio.sleep(0.05)
    assert f"127.0.0.1:{port}" in caplog.text and "cannot connect" in caplog.text
    receiver = await receive(port=port)
    (push,) = await receiver.wait_for(1)
    assert push["action"] == "push" and push["commit"] == rev_parse(store, "later")


async def test_a_full_queue_drops_the_oldest_with_a_warning(
    receive: Callable[..., Awaitable[Receiver]], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receive(gate=asyncio.Event())
    sink = Sink(Webhook(receiver.url), queue_size=3)
    sink.start()
    try:
        sink.put({"action": "push", "n": 0})
        await asyncio.wait_for(receiver.got.wait(), 10)  # 0 is being sent, the queue empty
        with caplog.at_level(logging.WARNING, "hroot.events"):
            for n in range(1, 7):
                sink.put({"action": "push", "n": n})
        assert sink.dropped == 3
        assert "queue full (3 events), dropping the oldest" in caplog.text
        counted = CollectorRegistry()
        counted.register(WebhookCollector([sink]))
        families = text_string_to_metric_families(generate_latest(counted).decode())
        found = {s.name: s.value for family in families for s in family.samples}
        assert found["hroot_webhook_events_dropped_total"] == 3
        assert found["hroot_webhook_events_queued"] == 3  # 4, 5 and 6 wait behind 0
        assert receiver.gate is not None
        receiver.gate.set()
        events = await receiver.wait_for(4)
        assert [e["n"] for e in events] == [0, 4, 5, 6]
    finally:
        await sink.close()


async def test_shutdown_waits_a_bounded_time_for_a_dead_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink(Webhook(f"http://user:pw@127.0.0.1:{free_port()}/events"))
    sink.start()
    sink.put({"action": "push"})
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, "hroot.events"):
        await sink.close(drain_timeout=0.5)
    assert time.perf_counter() - start < 2.0
    assert "not sent at shutdown" in caplog.text
    assert "pw" not in caplog.text  # the URL's credentials are never logged
