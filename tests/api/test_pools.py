"""The app's thread pools (registry.pools): a repository stuck on a ref lock holds at
most half of the write threads, and never a read thread."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from registry.pools import Pools
from storage import Store, digests, names, refs
from tests.api.helpers import Api, assert_error
from tests.documents import image_manifest


async def test_a_stuck_repository_delays_no_other(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api(write_threads=4)
    await api.push_image("stuck", "v0")
    bodies = []
    for n in range(6):  # blobs first: the pushes below only commit
        config = json.dumps({"os": "linux", "n": n}).encode()
        await api.push_blob("stuck", config)
        bodies.append(image_manifest(config, [b"layer one"]))
    lock = store.path / (names.branch_ref("stuck").decode() + ".lock")
    lock.write_text("0" * 40 + "\n")  # as a live writer holds it; stale only after 10 s

    stuck = [
        asyncio.ensure_future(api.put_manifest("stuck", f"t{n}", b)) for n, b in enumerate(bodies)
    ]
    await asyncio.sleep(0.5)  # every stuck push has asked for its thread
    started = time.monotonic()
    other = await api.push_image("other", "v1")
    pushed = time.monotonic() - started
    read = await api.client.get("/v2/stuck/manifests/v0")
    read_seconds = time.monotonic() - started - pushed
    lock.unlink()  # the holder finishes: the stuck pushes go through
    answers = await asyncio.gather(*stuck)

    assert pushed < 2 and other.digest
    assert read.status == 200 and read_seconds < 2
    assert [answer.status for answer in answers] == [201] * 6
    assert sorted((await (await api.client.get("/v2/stuck/tags/list")).json())["tags"]) == [
        "t0",
        "t1",
        "t2",
        "t3",
        "t4",
        "t5",
        "v0",
    ]


async def test_a_lock_held_past_the_wait_is_a_503(
    make_api: Callable[..., Awaitable[Api]], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push that waited for a ref lock as long as writes wait is told to try again
    (503 UNAVAILABLE), not given a 500, and wrote no ref."""
    monkeypatch.setattr(refs, "LOCK_WAIT_SECONDS", 0.5)  # 15 s in earnest
    api = await make_api()
    await api.push_image("stuck", "v0")
    config = json.dumps({"os": "linux", "n": 1}).encode()
    await api.push_blob("stuck", config)
    lock = store.path / (names.branch_ref("stuck").decode() + ".lock")
    lock.write_text("0" * 40 + "\n")  # a live writer's: fresh, not stale
    resp = await api.put_manifest("stuck", "v1", image_manifest(config, [b"layer one"]))
    error = await assert_error(resp, 503, "UNAVAILABLE")
    assert "stayed locked" in error["detail"]
    lock.unlink()
    tags = await (await api.client.get("/v2/stuck/tags/list")).json()
    assert tags["tags"] == ["v0"]


async def test_background_work_pauses_while_reads_run_within_its_budget() -> None:
    """A background job's `pause` waits for a request's read to end, and no longer than
    its budget when reads go on."""
    pools = Pools(read_threads=4, write_threads=1)
    try:
        pause = pools.yielder(budget=5.0)
        reading = asyncio.ensure_future(pools.read(time.sleep, 0.4))
        await asyncio.sleep(0.05)  # the read runs
        started = time.monotonic()
        await pools.background(pause)
        assert 0.25 < time.monotonic() - started < 2.0
        assert reading.done()
        await pools.background(pause)  # nothing reads: no wait

        short = pools.yielder(budget=0.1)
        reading = asyncio.ensure_future(pools.read(time.sleep, 1.0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await pools.background(short)
        assert time.monotonic() - started < 0.5 and not reading.done()
        await reading
    finally:
        pools.shutdown()


def test_building_the_lineage_index_pauses_between_its_pieces(store: Store) -> None:
    """prepare_lineage calls its pause before each branch and every 256 manifests."""
    for n in range(300):
        config = json.dumps({"os": "linux", "n": n}).encode()
        for blob in (config, b"a layer"):
            store.put_blob("many", str(digests.of(blob)), io.BytesIO(blob), len(blob))
        store.put_manifest("many", f"t{n}", image_manifest(config, [b"a layer"]))
    restarted = Store.open(store.path)
    pauses = []
    try:
        restarted.prepare_lineage(lambda: pauses.append(1))
        assert len(pauses) == 2  # before the branch, after its 256th manifest
        counted = []
        restarted.usage(lambda: counted.append(1))
        assert len(counted) == 2  # before the first repository, in each of two passes
    finally:
        restarted.close()
