"""/v2/<name>/blobs/uploads/…: every way real clients upload (see CLIENTS.md), and every misuse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.common import PIECE
from storage import Store
from tests.api.helpers import ABSENT, Api, assert_error
from tests.documents import digest_of

DATA = b"hello, registry"


async def _blob(api: Api, name: str, digest: str) -> bytes:
    resp = await api.client.get(f"/v2/{name}/blobs/{digest}")
    assert resp.status == 200
    return await resp.read()


def _spooled(store: Store) -> list[Path]:
    """Uploads in progress (DESIGN.md §2.5: spool files under <gitdir>/hroot/uploads/)."""
    return list((store.path / "hroot" / "uploads").iterdir())


async def test_post_opens_a_session(api: Api) -> None:
    resp = await api.client.post("/v2/library/alpine/blobs/uploads/")
    assert resp.status == 202
    upload_id = resp.headers["Docker-Upload-UUID"]
    assert resp.headers["Location"] == f"/v2/library/alpine/blobs/uploads/{upload_id}"
    assert resp.headers["Range"] == "0-0"
    assert resp.headers["Content-Length"] == "0"


async def test_monolithic_post_gives_201(api: Api) -> None:
    digest = digest_of(DATA)
    resp = await api.client.post(f"/v2/img/blobs/uploads/?digest={digest}", data=DATA)
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/img/blobs/{digest}"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert await _blob(api, "img", digest) == DATA


async def test_post_then_put_with_the_body(api: Api) -> None:
    """containerd and oras: POST, then one PUT ?digest= carrying the whole blob."""
    location = await api.start_upload("img")
    digest = digest_of(DATA, "sha512")
    resp = await api.client.put(f"{location}?digest={digest}", data=DATA)
    assert resp.status == 201
    assert resp.headers["Docker-Content-Digest"] == digest
    assert await _blob(api, "img", digest) == DATA


async def test_chunked_patches_with_content_range(api: Api) -> None:
    """oras: PATCH chunks with Content-Range, Range grows; then an empty PUT ?digest=."""
    location = await api.start_upload("img")
    for start in range(0, len(DATA), 4):
        chunk = DATA[start : start + 4]
        end = start + len(chunk) - 1
        resp = await api.client.patch(
            location, data=chunk, headers={"Content-Range": f"{start}-{end}"}
        )
        assert resp.status == 202
        assert resp.headers["Range"] == f"0-{end}"
        assert resp.headers["Location"] == location
        assert resp.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    resp = await api.client.put(f"{location}?digest={digest_of(DATA)}")
    assert resp.status == 201
    assert await _blob(api, "img", digest_of(DATA)) == DATA


async def test_one_streaming_patch_without_length(api: Api) -> None:
    """docker and skopeo: one chunked-encoded PATCH, no Content-Range, odd-sized pieces."""
    data = b"x" * (PIECE * 2 + 12345)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 300_001):
            yield data[start : start + 300_001]

    location = await api.start_upload("img")
    resp = await api.client.patch(location, data=body())
    assert resp.status == 202
    assert resp.headers["Range"] == f"0-{len(data) - 1}"
    resp = await api.client.put(f"{location}?digest={digest_of(data)}")
    assert resp.status == 201
    assert await _blob(api, "img", digest_of(data)) == data


async def test_status_reports_what_arrived(api: Api) -> None:
    """GET on a session: 204, Range 0-0 while empty (as Distribution), then 0-<last byte>."""
    location = await api.start_upload("img")
    resp = await api.client.get(location)
    assert (resp.status, resp.headers["Range"]) == (204, "0-0")
    await api.client.patch(location, data=DATA)
    resp = await api.client.get(location)
    assert (resp.status, resp.headers["Range"]) == (204, f"0-{len(DATA) - 1}")
    assert resp.headers["Location"] == location


async def test_out_of_order_chunk_gives_416_with_the_end(api: Api) -> None:
    """A chunk starting anywhere but the end: 416 with Range of what the upload holds."""
    location = await api.start_upload("img")
    resp = await api.client.patch(location, data=b"abc", headers={"Content-Range": "5-7"})
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    assert resp.headers["Range"] == "0-0"
    await api.client.patch(location, data=DATA)
    resp = await api.client.patch(location, data=b"abc", headers={"Content-Range": "0-2"})
    await assert_error(resp, 416, "BLOB_UPLOAD_INVALID")
    assert resp.headers["Range"] == f"0-{len(DATA) - 1}"
    assert resp.headers["Location"] == location


@pytest.mark.parametrize("header", ["abc", "5-2", "-3", "bytes 1-2-3"])
async def test_malformed_content_range_is_400(api: Api, header: str) -> None:
    location = await api.start_upload("img")
    resp = await api.client.patch(location, data=b"abc", headers={"Content-Range": header})
    await assert_error(resp, 400, "BLOB_UPLOAD_INVALID")


async def test_content_range_disagreeing_with_length_is_400(api: Api) -> None:
    """Content-Range 0-9 over a 3-byte body: 400 SIZE_INVALID, nothing written."""
    location = await api.start_upload("img")
    resp = await api.client.patch(location, data=b"abc", headers={"Content-Range": "0-9"})
    await assert_error(resp, 400, "SIZE_INVALID")
    assert (await api.client.get(location)).headers["Range"] == "0-0"


async def test_put_with_the_wrong_digest_is_400_and_ends_the_upload(api: Api) -> None:
    location = await api.start_upload("img")
    resp = await api.client.put(f"{location}?digest={digest_of(b'other')}", data=DATA)
    await assert_error(resp, 400, "DIGEST_INVALID")
    await assert_error(await api.client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("query", ["", "?digest=", "?digest=sha256:nothex", "?digest=md5:00"])
async def test_put_without_a_valid_digest_is_400(api: Api, query: str) -> None:
    location = await api.start_upload("img")
    resp = await api.client.put(f"{location}{query}", data=DATA)
    await assert_error(resp, 400, "DIGEST_INVALID")


async def test_failed_monolithic_post_leaves_no_upload(api: Api, store: Store) -> None:
    """POST ?digest= whose body does not match: 400 DIGEST_INVALID and no spool file left."""
    resp = await api.client.post(f"/v2/img/blobs/uploads/?digest={ABSENT}", data=DATA)
    await assert_error(resp, 400, "DIGEST_INVALID")
    assert _spooled(store) == []


async def test_delete_cancels_the_upload(api: Api, store: Store) -> None:
    location = await api.start_upload("img")
    await api.client.patch(location, data=DATA)
    resp = await api.client.delete(location)
    assert resp.status == 204
    await assert_error(await api.client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert _spooled(store) == []


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("upload_id", ["0" * 32, "not-an-id", "..%2f..%2fetc"])
async def test_unknown_upload_is_404(api: Api, method: str, upload_id: str) -> None:
    """Ids never handed out, including path tricks: 404 BLOB_UPLOAD_UNKNOWN."""
    url = f"/v2/img/blobs/uploads/{upload_id}?digest={digest_of(DATA)}"
    resp = await api.client.request(method, url, data=DATA)
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_upload_belongs_to_its_repository(api: Api) -> None:
    """A session of `a` used under `b`: 404 BLOB_UPLOAD_UNKNOWN."""
    location = await api.start_upload("a")
    resp = await api.client.get(location.replace("/v2/a/", "/v2/b/"))
    await assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_post_under_a_malformed_name_is_400(api: Api) -> None:
    await assert_error(await api.client.post("/v2/Bad/blobs/uploads/"), 400, "NAME_INVALID")


async def test_mount_from_a_repository_that_has_the_blob_gives_201(api: Api) -> None:
    digest = await api.push_blob("base", DATA)
    resp = await api.client.post(f"/v2/app/blobs/uploads/?mount={digest}&from=base")
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/app/blobs/{digest}"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert await _blob(api, "app", digest) == DATA


@pytest.mark.parametrize("query", [f"mount={ABSENT}&from=base", f"mount={ABSENT}"])
async def test_mount_that_finds_nothing_opens_a_session(api: Api, query: str) -> None:
    """An unknown blob, or no `from`: 202 and an upload session, the client uploads instead."""
    await api.push_blob("base", DATA)
    resp = await api.client.post(f"/v2/app/blobs/uploads/?{query}")
    assert resp.status == 202
    assert resp.headers["Location"].startswith("/v2/app/blobs/uploads/")


@pytest.mark.parametrize(
    ("query", "code"),
    [("mount=sha256:bad&from=base", "DIGEST_INVALID"), ("from=Bad", "NAME_INVALID")],
)
async def test_mount_with_malformed_parameters_is_400(api: Api, query: str, code: str) -> None:
    query = query if "mount" in query else f"mount={ABSENT}&{query}"
    resp = await api.client.post(f"/v2/app/blobs/uploads/?{query}")
    await assert_error(resp, 400, code)


async def test_broken_chunked_body_is_400_without_error_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A PATCH whose chunked encoding is garbage: 400, not a crash."""
    location = await api.start_upload("img")
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"3\r\nabc\r\nzz\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.split(b"\r\n")[0].split(b" ")[1] == b"400"
    assert all(r.levelno < logging.WARNING and not r.exc_info for r in caplog.records)
