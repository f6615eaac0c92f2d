"""Uncompressed layers through the API (docs/format.md §10): pushed as clients push them,
stored as files, pulled back byte for byte, whole and by range."""

from __future__ import annotations

import tarfile

from storage import Store
from tests import tars
from tests.api.helpers import Api
from tests.documents import digest_of
from tests.storage.images import git


async def test_a_pushed_tar_layer_is_stored_as_files_and_pulled_back(
    api: Api, store: Store
) -> None:
    layer = tars.python_tar(tarfile.PAX_FORMAT)
    image = await api.push_image("app", "v1", layers=(layer,))
    digest = digest_of(layer)
    listed = git(store, "ls-tree", "--name-only", "hroot/app:.hroot/layers/sha256")
    assert listed.split() == [digest.removeprefix("sha256:")]
    resp = await api.client.get(f"/v2/app/blobs/{digest}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(layer))
    assert digest_of(await resp.read()) == digest
    head = await api.client.head(f"/v2/app/blobs/{digest}")
    assert head.headers["Content-Length"] == str(len(layer))
    manifest = await api.client.get("/v2/app/manifests/v1")
    assert manifest.headers["Docker-Content-Digest"] == image.digest


async def test_ranges_of_a_layer_stored_as_files(api: Api) -> None:
    layer = tars.python_tar(tarfile.GNU_FORMAT)
    await api.push_image("app", "v1", layers=(layer,))
    digest = digest_of(layer)
    big = layer.index(b"usr/lib/big.bin") + 512  # its content begins a block after its header
    for first, last in [(0, 511), (big - 3, big + 3), (big + 1000, big + 300_000), (5, 5)]:
        resp = await api.client.get(
            f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={first}-{last}"}
        )
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{len(layer)}"
        assert await resp.read() == layer[first : last + 1]
    resp = await api.client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=-700"})
    assert await resp.read() == layer[-700:]


async def test_a_tar_pushed_in_chunks_is_stored_as_files(api: Api, store: Store) -> None:
    layer = tars.python_tar(tarfile.USTAR_FORMAT)
    location = await api.start_upload("app")
    for start in range(0, len(layer), 300_000):
        piece = layer[start : start + 300_000]
        resp = await api.client.patch(
            location,
            data=piece,
            headers={"Content-Range": f"{start}-{start + len(piece) - 1}"},
        )
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    digest = digest_of(layer)
    separator = "&" if "?" in location else "?"
    resp = await api.client.put(f"{location}{separator}digest={digest}")
    assert resp.status == 201, await resp.text()
    listed = git(store, "ls-tree", "--name-only", "refs/hroot/staging/app:.hroot/layers/sha256")
    assert listed.split() == [digest.removeprefix("sha256:")]
    resp = await api.client.get(f"/v2/app/blobs/{digest}")
    assert await resp.read() == layer
