"""The app's thread pools (registry.pools): a repository stuck on a ref lock holds at
most half of the write threads, and never a read thread."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from storage import Store, names, refs
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
