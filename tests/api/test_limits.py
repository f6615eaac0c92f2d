"""The registry's limits (config: body_timeout, upload_lifetime, max_uploads_per_client)
and its upload ids: each refusal is an OCI JSON error, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from registry.common import PIECE
from storage import Store
from tests.api.helpers import Api, assert_error
from tests.api.test_properties import snapshot
from tests.documents import digest_of

DATA = b"hello, registry"
DAY = 86_400.0


async def _stalled(api: Api, head: str, body: bytes) -> tuple[int, dict[str, object]]:
    """Send a request head and the start of its body, then nothing more: the answer's
    status and JSON body, which must come without the client sending another byte."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().split("\r\n")
        length = next(
            int(v) for k, _, v in (x.partition(": ") for x in lines) if k == "Content-Length"
        )
        return int(lines[0].split()[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


def _spool(store: Store, location: str) -> Path:
    return store.path / "hroot" / "uploads" / location.rsplit("/", 1)[1]


def _age(store: Store, location: str, seconds: float) -> None:
    """Make the upload at `location` look opened `seconds` ago (the spool says when)."""
    opened = time.time() - seconds
    os.utime(_spool(store, location) / "repo", (opened, opened))


# --- body_timeout -------------------------------------------------------------------------


async def test_a_stalled_body_is_408(make_api: Callable[..., Awaitable[Api]]) -> None:
    api = await make_api(body_timeout=0.5)
    location = await api.start_upload("img")
    head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    status, body = await _stalled(api, head, b"x" * 10)
    assert (status, body["errors"][0]["code"]) == (408, "UNKNOWN")  # type: ignore[index]


async def test_a_stalled_patch_keeps_what_arrived_for_a_resume(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    """Every whole piece that arrived stays (a piece cut short goes), and Range says so."""
    api = await make_api(body_timeout=0.5)
    blob = bytes(range(256)) * (PIECE // 256) + DATA
    location = await api.start_upload("img")
    head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(blob)}\r\n\r\n"
    started = time.monotonic()
    assert (await _stalled(api, head, blob[: PIECE + 5]))[0] == 408
    assert time.monotonic() - started < 5
    status = await api.client.get(location)
    assert (status.status, status.headers["Range"]) == (204, f"0-{PIECE - 1}")
    rest = {"Content-Range": f"{PIECE}-{len(blob) - 1}"}
    resp = await api.client.patch(location, data=blob[PIECE:], headers=rest)
    assert resp.status == 202, await resp.text()
    resp = await api.client.put(f"{location}?digest={digest_of(blob)}")
    assert resp.status == 201, await resp.text()


async def test_a_stalled_monolithic_post_leaves_no_spool(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api(body_timeout=0.5)
    before = snapshot(store)
    head = (
        f"POST /v2/img/blobs/uploads/?digest={digest_of(DATA)} HTTP/1.1\r\n"
        "Host: x\r\nContent-Length: 15\r\n\r\n"
    )
    assert (await _stalled(api, head, DATA[:3]))[0] == 408
    assert snapshot(store) == before


async def test_a_stalled_manifest_is_408_and_writes_nothing(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api(body_timeout=0.5)
    await api.push_image("img", "v1")
    before = snapshot(store)
    head = "PUT /v2/img/manifests/v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n"
    status, body = await _stalled(api, head, b'{"schemaVersion": 2')
    assert status == 408 and body["errors"][0]["message"] == "the request body stalled"  # type: ignore[index]
    assert snapshot(store) == before


async def test_a_slow_body_that_keeps_sending_is_served(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    """Under the timeout between any two bytes, however long the whole takes."""
    api = await make_api(body_timeout=0.5)

    async def slowly() -> object:
        for byte in DATA[:4]:
            yield bytes([byte])
            await asyncio.sleep(0.3)

    digest = digest_of(DATA[:4])
    resp = await api.client.post(f"/v2/img/blobs/uploads/?digest={digest}", data=slowly())
    assert resp.status == 201, await resp.text()


# --- upload_lifetime ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_an_expired_upload_is_404_and_its_spool_goes(
    api: Api, store: Store, method: str
) -> None:
    location = await api.start_upload("img")
    await api.client.patch(location, data=DATA)
    _age(store, location, DAY + 60)  # the default lifetime: a day
    resp = await api.client.request(method, f"{location}?digest={digest_of(DATA)}", data=b"")
    error = await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    assert error["message"] == "blob upload expired after 86400 s"
    assert not _spool(store, location).exists()


async def test_an_upload_within_its_lifetime_goes_on(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api(upload_lifetime=600.0)
    location = await api.start_upload("img")
    _age(store, location, 590)
    resp = await api.client.put(f"{location}?digest={digest_of(DATA)}", data=DATA)
    assert resp.status == 201, await resp.text()


# --- max_uploads_per_client ---------------------------------------------------------------


async def test_one_session_over_the_limit_is_429(make_api: Callable[..., Awaitable[Api]]) -> None:
    api = await make_api(max_uploads_per_client=2)
    for _ in range(2):
        await api.start_upload("img")
    error = await assert_error(
        await api.client.post("/v2/img/blobs/uploads/"), 429, "TOOMANYREQUESTS"
    )
    assert error["message"] == "too many upload sessions open (the limit is 2)"


async def test_a_refused_session_writes_nothing(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api(max_uploads_per_client=1)
    await api.start_upload("img")
    before = snapshot(store)
    resp = await api.client.post(f"/v2/img/blobs/uploads/?digest={digest_of(DATA)}", data=DATA)
    await assert_error(resp, 429, "TOOMANYREQUESTS")
    assert snapshot(store) == before


async def test_ended_sessions_stop_counting(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    """Finished, cancelled, failed (wrong digest), monolithic and expired sessions all free
    their slot: with a limit of 1, each next POST opens a session."""
    api = await make_api(max_uploads_per_client=1)
    finished = await api.start_upload("img")
    assert (await api.client.put(f"{finished}?digest={digest_of(DATA)}", data=DATA)).status == 201
    cancelled = await api.start_upload("img")
    assert (await api.client.delete(cancelled)).status == 204
    failed = await api.start_upload("img")
    assert (await api.client.put(f"{failed}?digest={digest_of(b'other')}", data=DATA)).status == 400
    await api.push_blob("img", b"monolithic")
    expired = await api.start_upload("img")
    _age(store, expired, DAY + 60)
    await assert_error(await api.client.get(expired), 404, "BLOB_UPLOAD_UNKNOWN")
    await api.start_upload("img")


async def test_sessions_count_across_concurrent_posts(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    """Twenty POSTs at once with a limit of 5: exactly 5 sessions, 15 refusals."""
    api = await make_api(max_uploads_per_client=5)
    answers = await asyncio.gather(
        *(api.client.post(f"/v2/img{n}/blobs/uploads/") for n in range(20))
    )
    assert sorted(r.status for r in answers) == [202] * 5 + [429] * 15


async def test_a_session_used_under_another_name_still_counts(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(max_uploads_per_client=1)
    location = await api.start_upload("a")
    await assert_error(
        await api.client.delete(location.replace("/v2/a/", "/v2/b/")), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    await assert_error(await api.client.post("/v2/a/blobs/uploads/"), 429, "TOOMANYREQUESTS")


# --- upload ids ---------------------------------------------------------------------------


async def test_upload_ids_are_random_uuids(api: Api) -> None:
    """uuid4: 122 random bits each, from the OS's generator, so none can be guessed."""
    ids = [(await api.start_upload("img")).rsplit("/", 1)[1] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch("[0-9a-f]{32}", i) and uuid.UUID(i).version == 4 for i in ids)


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_an_upload_id_under_another_repository_is_404_and_changes_nothing(
    api: Api, store: Store, method: str
) -> None:
    await api.push_image("b", "v1")
    location = await api.start_upload("a")
    await api.client.patch(location, data=DATA[:5])
    before = snapshot(store)
    elsewhere = location.replace("/v2/a/", "/v2/b/")
    for url in (elsewhere, location.replace("/v2/a/", "/v2/a/b/")):
        resp = await api.client.request(method, f"{url}?digest={digest_of(DATA)}", data=DATA)
        await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot(store) == before
    resp = await api.client.put(f"{location}?digest={digest_of(DATA)}", data=DATA[5:])
    assert resp.status == 201, await resp.text()
