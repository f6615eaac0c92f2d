"""The app's thread pools (registry.pools): a repository stuck on a ref lock holds at
most half of the write threads, and never a read thread."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from storage import Store, names
from tests.api.helpers import Api
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
