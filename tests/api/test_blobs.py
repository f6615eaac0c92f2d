"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>, with byte ranges."""

from __future__ import annotations

import pytest

from registry.common import PIECE
from tests.api.helpers import ABSENT, API_VERSION, Api, assert_error
from tests.documents import digest_of

DATA = b"0123456789"


async def test_get_streams_the_blob_with_its_headers(api: Api) -> None:
    digest = await api.push_blob("library/alpine", DATA)
    resp = await api.client.get(f"/v2/library/alpine/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == DATA
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Content-Length"] == "10"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Docker-Distribution-API-Version"] == API_VERSION


async def test_head_gives_headers_only(api: Api) -> None:
    digest = await api.push_blob("img", DATA)
    resp = await api.client.head(f"/v2/img/blobs/{digest}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "10"
    assert resp.headers["Docker-Content-Digest"] == digest
    assert await resp.read() == b""


async def test_blob_of_several_pieces_round_trips(api: Api) -> None:
    """More than two PIECEs, not a multiple of one: up in pieces, down in pieces."""
    data = bytes(range(256)) * (PIECE * 5 // 2 // 256) + b"tail"
    digest = await api.push_blob("img", data)
    resp = await api.client.get(f"/v2/img/blobs/{digest}")
    assert await resp.read() == data


async def test_empty_and_sha512_blobs(api: Api) -> None:
    empty = await api.push_blob("img", b"")
    resp = await api.client.get(f"/v2/img/blobs/{empty}")
    assert (resp.status, await resp.read(), resp.headers["Content-Length"]) == (200, b"", "0")
    long = await api.push_blob("img", DATA, "sha512")
    resp = await api.client.get(f"/v2/img/blobs/{long}")
    assert (await resp.read(), resp.headers["Docker-Content-Digest"]) == (DATA, long)


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=0-3", b"0123", "bytes 0-3/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
        ("bytes=-100", DATA, "bytes 0-9/10"),
    ],
)
async def test_range_gives_206(api: Api, header: str, body: bytes, content_range: str) -> None:
    digest = await api.push_blob("img", DATA)
    resp = await api.client.get(f"/v2/img/blobs/{digest}", headers={"Range": header})
    assert resp.status == 206
    assert await resp.read() == body
    assert resp.headers["Content-Range"] == content_range
    assert resp.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize(
    "header",
    ["bytes=10-", "bytes=5-2", "bytes=-0", "bytes=abc", "items=0-1", "bytes=0-1,3-4", "bytes=-"],
)
async def test_range_we_cannot_serve_gives_416(api: Api, header: str) -> None:
    """Past the end, reversed, empty, malformed, other units or several ranges: a clean 416."""
    digest = await api.push_blob("img", DATA)
    resp = await api.client.get(f"/v2/img/blobs/{digest}", headers={"Range": header})
    await assert_error(resp, 416, "RANGE_INVALID")
    assert resp.headers["Content-Range"] == "bytes */10"


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_unknown_blob_is_404(api: Api, method: str) -> None:
    """A digest the repository lacks, even if another repository has it: 404 BLOB_UNKNOWN."""
    await api.push_blob("other", DATA)
    for digest in (ABSENT, digest_of(DATA)):
        resp = await api.client.request(method, f"/v2/img/blobs/{digest}")
        await assert_error(resp, 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "digest", ["sha256:xyz", "md5:" + "0" * 32, "nodigest", "sha256:" + "A" * 64]
)
async def test_malformed_digest_is_400(api: Api, digest: str) -> None:
    await assert_error(await api.client.get(f"/v2/img/blobs/{digest}"), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("name", ["Upper", "a//b", "-lead", "a" * 300])
async def test_malformed_name_is_400(api: Api, name: str) -> None:
    resp = await api.client.get(f"/v2/{name}/blobs/{ABSENT}")
    await assert_error(resp, 400, "NAME_INVALID")


async def test_delete_blob_gives_202_then_it_is_gone(api: Api) -> None:
    digest = await api.push_blob("img", DATA)
    resp = await api.client.delete(f"/v2/img/blobs/{digest}")
    assert resp.status == 202
    await assert_error(await api.client.get(f"/v2/img/blobs/{digest}"), 404, "BLOB_UNKNOWN")
