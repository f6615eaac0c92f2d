"""A full disk, for real: the registry on a 48 MiB tmpfs that the test mounts and fills.

Pushes that do not fit answer 507 with the spec's JSON error, free what they wrote, move
no ref, and the same push works as soon as space returns. Needs root for `mount`: without
it the tests skip, or fail under HROOT_REQUIRE_E2E=1.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import subprocess
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from storage import Store
from storage.errors import StorageFull
from storage.space import free_bytes
from tests.api.helpers import Api, assert_error
from tests.documents import digest_of, image_manifest

MiB = 1 << 20
MARGIN = MiB  # min_free_bytes of these tests' server
FULL_MESSAGE = "no space left on the registry's disk"


@pytest.fixture
def store(disk: Path) -> Iterator[Store]:
    """The registry on the small disk: conftest's `make_api` serves it."""
    store = Store.open(disk / "hroot.git")
    yield store
    store.close()


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_api(min_free_bytes=MARGIN)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the disk's free space (all of it for 0)."""
    filler = disk / "filler"
    with open(filler, "ab") as out:
        while (free := free_bytes(disk)) > leave:
            try:
                out.write(bytes(min(MiB, free - leave)))
                out.flush()
            except OSError:  # full: a last buffer that did not fit
                break
    return filler


def git(store: Store, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", store.path, *args], check=True, capture_output=True, text=True
    ).stdout


def leftovers(store: Store) -> list[Path]:
    """Spools of uploads and temporary objects: what a failed write must not leave."""
    return [
        *(store.path / "hroot" / "uploads").iterdir(),
        *(store.path / "objects").glob("tmp_obj_*"),
    ]


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    """The body as a generator: aiohttp sends it chunked, with no Content-Length."""
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]


async def push_chunked(api: Api, name: str, data: bytes) -> tuple[int, dict]:
    """POST, one PATCH without Content-Length, PUT ?digest=: the first failing answer's
    (status, JSON body), or (201, {}) when the blob is stored."""
    location = await api.start_upload(name)
    resp = await api.client.patch(location, data=pieces(data))
    if resp.status != 202:
        return resp.status, await resp.json()
    resp = await api.client.put(f"{location}?digest={digest_of(data)}")
    return resp.status, ({} if resp.status == 201 else await resp.json())


async def test_a_push_bigger_than_the_disk_is_507_frees_its_spool_and_works_after_space_returns(
    api: Api, store: Store, disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await api.push_image("app", "v1")
    refs = git(store, "for-each-ref")
    filler = fill(disk, 24 * MiB)
    free = free_bytes(disk)
    layer = os.urandom(32 * MiB)

    with caplog.at_level(logging.WARNING, "hroot.registry"):
        status, body = await push_chunked(api, "app", layer)
    assert status == 507, body
    (error,) = body["errors"]
    assert error["code"] == "UNKNOWN" and error["message"] == FULL_MESSAGE
    assert leftovers(store) == []
    # What the spool held is free again, and the detail says so.
    assert free - 64 * 1024 <= free_bytes(disk) == error["detail"]["free_bytes"]
    assert git(store, "for-each-ref") == refs
    warnings = [r for r in caplog.records if r.name == "hroot.registry"]
    assert [(r.levelno, r.exc_info) for r in warnings] == [(logging.WARNING, None)]
    assert "disk full on PATCH" in warnings[0].getMessage()

    filler.unlink()
    assert await push_chunked(api, "app", layer) == (201, {})
    config = b'{"os":"linux"}'
    await api.push_blob("app", config)
    manifest = image_manifest(config, [layer])
    assert (await api.put_manifest("app", "v2", manifest)).status == 201
    resp = await api.client.get(f"/v2/app/blobs/{digest_of(layer)}")
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest() == digest_of(layer).split(":")[1]
    assert leftovers(store) == []
    git(store, "fsck", "--strict", "--no-dangling")


async def test_a_content_length_beyond_free_space_is_refused_before_the_body(
    api: Api, store: Store, disk: Path
) -> None:
    location = await api.start_upload("app")
    fill(disk, 8 * MiB)
    host, port = api.client.host, api.client.port
    reader, writer = await asyncio.open_connection(host, port)
    try:  # the headers only: an answer is proof that no byte of the body was waited for
        writer.write(
            f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Length: {16 * MiB}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    finally:
        writer.close()
    assert head.startswith(
        b"HTTP/1.1 507 Insufficient Storage (no space left on the registry's disk)\r\n"
    ), head
    # Refused before anything was written: the upload is still there, empty.
    resp = await api.client.get(location)
    assert resp.status == 204 and resp.headers["Range"] == "0-0"

    resp = await api.client.post(
        f"/v2/app/blobs/uploads/?digest={digest_of(bytes(8 * MiB))}", data=bytes(8 * MiB)
    )
    error = await assert_error(resp, 507, "UNKNOWN")
    assert error["detail"]["needed_bytes"] == 8 * MiB + MARGIN
    fill(disk, MARGIN // 2)  # too little left for even a manifest, with the margin
    resp = await api.put_manifest("app", "v1", image_manifest(b"{}", []))
    error = await assert_error(resp, 507, "UNKNOWN")
    assert error["message"] == FULL_MESSAGE
    assert leftovers(store) == [location_folder(store, location)]


def location_folder(store: Store, location: str) -> Path:
    return store.path / "hroot" / "uploads" / location.rsplit("/", 1)[1]


def test_the_store_frees_what_a_write_that_did_not_fit_wrote(store: Store, disk: Path) -> None:
    """A blob of known size (put_blob's one pass) and a manifest's commit (its ObjectBatch)."""
    config, layer = b'{"os":"linux"}', os.urandom(MiB)
    for blob in (config, layer):
        store.put_blob("app", digest_of(blob), io.BytesIO(blob), len(blob))
    refs = git(store, "for-each-ref")
    filler = fill(disk, 4 * MiB)
    big = os.urandom(8 * MiB)
    with pytest.raises(StorageFull):
        store.put_blob("app", digest_of(big), io.BytesIO(big), len(big))
    assert leftovers(store) == []

    fill(disk, 0)
    with pytest.raises(StorageFull):
        store.put_manifest("app", "v1", image_manifest(config, [layer]))
    assert leftovers(store) == []
    assert git(store, "for-each-ref") == refs

    filler.unlink()
    store.put_manifest("app", "v1", image_manifest(config, [layer]))
    assert store.tags("app") == ["v1"]
    git(store, "fsck", "--strict", "--no-dangling")


def files_tar(files: int, size: int) -> bytes:
    """An uncompressed tar (as `docker save` holds) of `files` random files of `size`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for number in range(files):
            member = tarfile.TarInfo(f"usr/lib/{number}.bin")
            member.size = size
            tar.addfile(member, io.BytesIO(os.urandom(size)))
    return out.getvalue()


async def test_a_tar_split_as_it_arrives_that_does_not_fit_is_507_and_leaves_no_pack(
    api: Api, store: Store, disk: Path
) -> None:
    """The split's pack and the spool both grow as the tar arrives: whichever finds the
    disk full first, nothing of either is left, and the push works once there is room,
    stored as files."""
    filler = fill(disk, 12 * MiB)
    layer = files_tar(16, MiB)
    status, body = await push_chunked(api, "app", layer)
    assert status == 507, body
    assert leftovers(store) == []
    assert list((store.path / "objects" / "pack").glob("tmp_pack_*")) == []

    filler.unlink()
    assert await push_chunked(api, "app", layer) == (201, {})
    stored = git(store, "ls-tree", "--name-only", "refs/hroot/staging/app:.hroot/layers/sha256")
    assert stored.split() == [digest_of(layer).removeprefix("sha256:")]
    resp = await api.client.get(f"/v2/app/blobs/{digest_of(layer)}")
    assert hashlib.sha256(await resp.read()).hexdigest() == digest_of(layer).split(":")[1]
    git(store, "fsck", "--strict", "--no-dangling")
