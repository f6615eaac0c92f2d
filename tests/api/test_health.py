"""/health and /ready of the in-process app: 200 while all is well, and /ready's 503 with the
failing checks when the disk is full, the store cannot be read, or a follower falls behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from storage import Store
from storage.space import free_bytes
from tests.api.helpers import Api

MiB = 1 << 20


async def ready(api: Api, status: int) -> dict[str, Any]:
    """/ready's JSON body, which must come with `status`."""
    resp = await api.client.get("/ready")
    return await _json(resp, status)


async def _json(resp: ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


async def test_health_and_ready_answer_200(api: Api) -> None:
    assert await _json(await api.client.get("/health"), 200) == {"status": "ok"}
    await api.push_image("health/app", "v1")
    body = await ready(api, 200)
    assert body["status"] == "ok" and body["failing"] == []
    assert body["checks"]["store"] == {"ok": True, "repositories": 1}
    disk = body["checks"]["disk"]
    assert disk["ok"] and disk["free_bytes"] > disk["min_free_bytes"] == Config().min_free_bytes
    assert "follower" not in body["checks"]


async def test_ready_is_503_while_the_repository_is_gone(api: Api, store: Store) -> None:
    await api.push_image("health/app", "v1")
    away = store.path.with_name("away.git")
    store.path.rename(away)
    try:
        body = await ready(api, 503)
        assert body["status"] == "failing" and "store" in body["failing"]
        assert body["checks"]["store"]["ok"] is False
        assert body["checks"]["store"]["error"].startswith("cannot read the repository")
        assert str(store.path) not in str(body)  # anyone may ask: no paths
        assert await _json(await api.client.get("/health"), 200) == {"status": "ok"}
    finally:
        away.rename(store.path)
    await ready(api, 200)


async def test_ready_is_503_while_a_branch_tip_cannot_be_read(api: Api, store: Store) -> None:
    await api.push_image("health/app", "v1")
    tip = (store.path / "refs/heads/hroot/health+app").read_text().strip()
    loose = store.path / "objects" / tip[:2] / tip[2:]
    moved = loose.with_name("moved")
    loose.rename(moved)
    try:
        body = await ready(api, 503)
        assert body["failing"] == ["store"]
        assert body["checks"]["disk"]["ok"] is True
    finally:
        moved.rename(loose)
    await ready(api, 200)


@pytest.fixture
def disk_store(disk: Path) -> Iterator[Store]:
    store = Store.open(disk / "hroot.git")
    yield store
    store.close()


async def test_ready_is_503_while_the_disk_is_full(
    aiohttp_client: AiohttpClient, disk_store: Store, disk: Path
) -> None:
    config = Config(data=disk_store.path, min_free_bytes=MiB)
    api = Api(await aiohttp_client(create_app(config, disk_store)))
    await ready(api, 200)
    filler = disk / "filler"
    with open(filler, "wb") as out:  # all but half of the margin
        out.truncate(0)
        os.posix_fallocate(out.fileno(), 0, free_bytes(disk) - MiB // 2)
    try:
        body = await ready(api, 503)
        assert body["failing"] == ["disk"]
        disk_check = body["checks"]["disk"]
        assert disk_check["free_bytes"] <= disk_check["min_free_bytes"] == MiB
        assert "min_free_bytes" in disk_check["error"]
    finally:
        filler.unlink()
    await ready(api, 200)


async def test_ready_is_503_for_a_follower_past_its_lag_bound(
    make_api: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    primary = Store.open(tmp_path / "primary.git")
    primary.close()
    follower = await make_api(follow=str(primary.path), follow_interval=0.1, ready_follow_lag=1.0)
    body = await until(follower, 200)
    assert body["checks"]["follower"]["ok"] is True
    assert body["checks"]["follower"]["max_lag_seconds"] == 1.0

    away = primary.path.with_name("away.git")
    primary.path.rename(away)  # every fetch fails from now on
    try:
        body = await until(follower, 503)
        assert body["failing"] == ["follower"]
        assert body["checks"]["follower"]["lag_seconds"] > 1.0
    finally:
        away.rename(primary.path)
    await until(follower, 200)


async def until(api: Api, status: int, seconds: float = 10.0) -> dict[str, Any]:
    """/ready's body once it answers `status`, asking every 0.1 s."""
    for _ in range(int(seconds * 10)):
        resp = await api.client.get("/ready")
        if resp.status == status:
            return await _json(resp, status)
        await asyncio.sleep(0.1)
    raise AssertionError(f"/ready did not answer {status} in {seconds} s: {await resp.text()}")
