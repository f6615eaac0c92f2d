"""The pull-through proxy (registry.proxy) in front of a real upstream: another hroot app,
with its own store, on a real socket; requests counted as they reach it."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from registry.upstreams import Upstream
from storage import Store, names
from tests.api.helpers import Api, assert_error
from tests.documents import OCI_INDEX, digest_of, image_manifest, index_manifest


@dataclass
class Upstairs:
    """The upstream: an Api to push with, its URL, and what reached it (method, path)."""

    api: Api
    url: str
    seen: Counter[tuple[str, str]]
    server: TestServer

    def count(self, method: str, fragment: str) -> int:
        return sum(n for (m, path), n in self.seen.items() if m == method and fragment in path)


@pytest.fixture
async def upstairs(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Upstairs]:
    store = Store.open(tmp_path / "upstream.git")
    app = create_app(Config(data=store.path), store)
    seen: Counter[tuple[str, str]] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen[(request.method, request.path)] += 1
        return await handler(request)

    app.middlewares.insert(0, count)
    client = await aiohttp_client(app)
    server = client.server
    yield Upstairs(Api(client), f"http://{server.host}:{server.port}", seen, server)
    store.close()


MakeProxy = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_proxy(aiohttp_client: AiohttpClient, store: Store, upstairs: Upstairs) -> MakeProxy:
    """An Api of a registry (the `store` fixture's) proxying `upstairs` under `up/`."""

    async def make(ttl: float = 300.0, prefix: str = "up", **settings: Any) -> Api:
        upstream = Upstream(upstairs.url, prefix, ttl=ttl)
        config = Config(data=store.path, upstream=(upstream,), **settings)
        return Api(await aiohttp_client(create_app(config, store)))

    return make


def log_of(store: Store, name: str) -> str:
    return subprocess.run(
        [
            "git",
            "--git-dir",
            store.path,
            "log",
            "--format=%s%n%b%x00",
            names.branch_ref(name).decode(),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


async def settled(store: Store, name: str, commits: int) -> str:
    """The branch's log once it has `commits` commits (the proxy commits in the background)."""
    for _ in range(200):
        try:
            log = log_of(store, name)
        except subprocess.CalledProcessError:
            log = ""
        if log.count("\x00") >= commits:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never got {commits} commits:\n{log}")


async def test_a_pull_streams_stores_and_commits(
    upstairs: Upstairs, make_proxy: MakeProxy, store: Store
) -> None:
    layer = secrets.token_bytes(3_000_000)
    image = await upstairs.api.push_image("lib/app", "v1", layers=(layer, b"small"))
    proxy = await make_proxy()
    resp = await proxy.client.get("/v2/up/lib/app/manifests/v1")
    assert resp.status == 200 and await resp.read() == image.manifest
    assert resp.headers["Docker-Content-Digest"] == image.digest
    resp = await proxy.client.get(f"/v2/up/lib/app/blobs/{digest_of(layer)}")
    assert resp.status == 200 and await resp.read() == layer
    log = await settled(store, "up/lib/app", 1)
    assert f"push up/lib/app:v1 {image.digest}" in log
    assert f"Proxied-From: {upstairs.url}/lib/app:v1" in log
    assert f"Upstream-Digest: {image.digest}" in log
    # Stored: served without upstream, by tag (within the TTL) and by digest.
    before = sum(upstairs.seen.values())
    for reference in ("v1", image.digest):
        resp = await proxy.client.get(f"/v2/up/lib/app/manifests/{reference}")
        assert await resp.read() == image.manifest
    for blob in (layer, b"small"):
        resp = await proxy.client.get(f"/v2/up/lib/app/blobs/{digest_of(blob)}")
        assert await resp.read() == blob
    assert sum(upstairs.seen.values()) == before
    assert upstairs.count("GET", f"/blobs/{digest_of(layer)}") == 1


async def test_a_moved_tag_is_a_new_commit_after_its_ttl(
    upstairs: Upstairs, make_proxy: MakeProxy, store: Store
) -> None:
    first = await upstairs.api.push_image("lib/app", "latest", layers=(b"one",))
    proxy = await make_proxy(ttl=1.0)
    resp = await proxy.client.get("/v2/up/lib/app/manifests/latest")
    assert resp.headers["Docker-Content-Digest"] == first.digest
    second = await upstairs.api.push_image("lib/app", "latest", layers=(b"two",))
    resp = await proxy.client.get("/v2/up/lib/app/manifests/latest")
    assert resp.headers["Docker-Content-Digest"] == first.digest  # within the TTL
    await settled(store, "up/lib/app", 1)
    await asyncio.sleep(1.0)
    resp = await proxy.client.get("/v2/up/lib/app/manifests/latest")
    assert resp.headers["Docker-Content-Digest"] == second.digest
    heads = upstairs.count("HEAD", "/manifests/latest")
    resp = await proxy.client.get("/v2/up/lib/app/manifests/latest")
    assert resp.headers["Docker-Content-Digest"] == second.digest  # pending, not committed
    assert upstairs.count("HEAD", "/manifests/latest") == heads  # within the TTL again
    log = await settled(store, "up/lib/app", 2)
    assert log.index(second.digest) < log.index(first.digest)  # newest first, both kept
    assert f"Previous-Digest: {first.digest}" in log


async def test_upstream_down_serves_what_is_stored(
    upstairs: Upstairs, make_proxy: MakeProxy, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    image = await upstairs.api.push_image("lib/app", "v1", layers=(b"kept",))
    proxy = await make_proxy(ttl=0)
    assert (await proxy.client.get("/v2/up/lib/app/manifests/v1")).status == 200
    await settled(store, "up/lib/app", 1)
    await upstairs.server.close()
    caplog.set_level(logging.WARNING, logger="hroot.proxy")
    resp = await proxy.client.get("/v2/up/lib/app/manifests/v1")
    assert resp.status == 200 and await resp.read() == image.manifest
    assert "serving up/lib/app:v1 as stored" in caplog.text
    resp = await proxy.client.get(f"/v2/up/lib/app/blobs/{digest_of(b'kept')}")
    assert await resp.read() == b"kept"
    resp = await proxy.client.get("/v2/up/lib/other/manifests/v1")
    error = await assert_error(resp, 502, "UNKNOWN")
    assert upstairs.url in json.dumps(error)
    tags = await (await proxy.client.get("/v2/up/lib/app/tags/list")).json()
    assert tags["tags"] == ["v1"]


async def test_concurrent_pulls_of_a_missing_blob_fetch_it_once(
    upstairs: Upstairs, make_proxy: MakeProxy
) -> None:
    layer = secrets.token_bytes(20_000_000)
    await upstairs.api.push_image("lib/big", "v1", layers=(layer,))
    proxy = await make_proxy()
    await proxy.client.get("/v2/up/lib/big/manifests/v1")
    path = f"/v2/up/lib/big/blobs/{digest_of(layer)}"

    async def pull() -> bytes:
        resp = await proxy.client.get(path)
        assert resp.status == 200
        return await resp.read()

    assert await asyncio.gather(*(pull() for _ in range(4))) == [layer] * 4
    assert upstairs.count("GET", f"/blobs/{digest_of(layer)}") == 1


async def test_an_index_and_its_images(
    upstairs: Upstairs, make_proxy: MakeProxy, store: Store
) -> None:
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        await upstairs.api.push_blob("lib/multi", config)
        await upstairs.api.push_blob("lib/multi", arch.encode())
        child = image_manifest(config, [arch.encode()])
        resp = await upstairs.api.put_manifest("lib/multi", digest_of(child), child)
        assert resp.status == 201
        children.append(child)
    index = index_manifest(children)
    resp = await upstairs.api.put_manifest("lib/multi", "v1", index, OCI_INDEX)
    assert resp.status == 201
    proxy = await make_proxy()
    resp = await proxy.client.get("/v2/up/lib/multi/manifests/v1")
    assert await resp.read() == index
    log = await settled(store, "up/lib/multi", 3)
    assert log.index("push up/lib/multi:v1") < log.index(
        f"push up/lib/multi@{digest_of(children[0])}"
    )
    for child in children:
        resp = await proxy.client.get(f"/v2/up/lib/multi/manifests/{digest_of(child)}")
        assert await resp.read() == child
    assert upstairs.count("GET", f"/manifests/{digest_of(children[0])}") == 1


async def test_writes_to_proxied_names_are_refused_and_local_names_stay_local(
    upstairs: Upstairs, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.post("/v2/up/lib/app/blobs/uploads/")
    error = await assert_error(resp, 403, "DENIED")
    assert upstairs.url in error["message"]
    resp = await proxy.client.delete("/v2/up/lib/app/manifests/v1")
    await assert_error(resp, 403, "DENIED")
    await proxy.push_image("mine/app", "v1")
    await assert_error(await proxy.client.get("/v2/mine/other/manifests/v1"), 404, "NAME_UNKNOWN")
    assert not upstairs.seen


async def test_upstream_errors_map_to_oci_errors(upstairs: Upstairs, make_proxy: MakeProxy) -> None:
    await upstairs.api.push_image("lib/app", "v1")
    proxy = await make_proxy()
    await assert_error(
        await proxy.client.get("/v2/up/lib/app/manifests/v9"), 404, "MANIFEST_UNKNOWN"
    )
    await assert_error(
        await proxy.client.get(f"/v2/up/lib/app/blobs/{digest_of(b'nowhere')}"),
        404,
        "BLOB_UNKNOWN",
    )


async def test_a_blob_that_is_not_its_digest_is_refused(
    aiohttp_client: AiohttpClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream that sends other bytes than the digest says: the client's download
    breaks off before its end, and nothing is stored."""
    good, bad = secrets.token_bytes(3_000_000), secrets.token_bytes(3_000_000)
    config = b"{}"
    manifest = image_manifest(config, [good])

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith("/manifests/v1") or path.endswith(digest_of(manifest)):
            return web.Response(
                body=manifest,
                headers={
                    "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                    "Docker-Content-Digest": digest_of(manifest),
                },
            )
        return web.Response(body=config if path.endswith(digest_of(config)) else bad)

    liar = web.Application()
    liar.router.add_route("*", "/{tail:.*}", serve)
    liar_server = (await aiohttp_client(liar)).server
    upstream = Upstream(f"http://{liar_server.host}:{liar_server.port}")
    config_ = Config(data=store.path, upstream=(upstream,))
    proxy = Api(await aiohttp_client(create_app(config_, store)))
    assert (await proxy.client.get("/v2/lib/app/manifests/v1")).status == 200
    resp = await proxy.client.get(f"/v2/lib/app/blobs/{digest_of(good)}")
    assert resp.status == 200
    with pytest.raises(Exception):  # noqa: B017 (aiohttp's payload error, whichever)
        await resp.read()
    await asyncio.sleep(0.5)  # the background commit gives up too
    assert (
        "cut off lib/app@" in caplog.text
        and "sent a blob that does not match its digest" in caplog.text
    )
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text
    assert list((store.path / "hroot" / "uploads").iterdir()) == []
    refs = ["git", "--git-dir", store.path, "for-each-ref", "refs/heads/"]
    assert subprocess.run(refs, check=True, capture_output=True, text=True).stdout == ""
