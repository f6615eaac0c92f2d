"""A tar layer taken apart as its upload arrives (storage.uploads, storage.filestore): in
pieces of any size, over several requests, beside other uploads, and given up cleanly
when the upload is cancelled, sits idle or turns out to be no tar to split."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from storage import Store, digests, tarsplit, uploads
from storage.errors import DigestInvalid
from tests import tars
from tests.storage.images import git
from tests.storage.test_storage_filestore import read, staged, stored_as_files

TAR = tars.python_tar(tarfile.GNU_FORMAT)


def layer_tree(store: Store, digest: str) -> str:
    """The id of the tree that holds the layer's files (docs/format.md §10)."""
    path = f"{staged('t')}:.hroot/layers/sha256/{digest.removeprefix('sha256:')}"
    return git(store, "rev-parse", path).strip()


def send(store: Store, upload_id: str, pieces: list[bytes]) -> None:
    """One request's worth of writes to an upload."""
    with store.open_upload("t", upload_id) as writer:
        for piece in pieces:
            writer.write(piece)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` in pieces of `sizes`, over and over, to its end."""
    pieces, at, turn = [], 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        pieces.append(data[at : at + size])
        at, turn = at + size, turn + 1
    return pieces


def tmp_packs(store: Store) -> set[str]:
    return {path.name for path in (store.path / "objects" / "pack").glob("tmp_pack_*")}


@pytest.fixture(scope="module")
def whole_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The layer tree of TAR uploaded in one piece."""
    store = Store.open(tmp_path_factory.mktemp("one") / "r.git")
    try:
        upload_id = store.start_upload("t")
        send(store, upload_id, [TAR])
        return layer_tree(
            store, str(store.finish_upload("t", upload_id, str(digests.of(TAR))).digest)
        )
    finally:
        store.close()


@settings(
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(st.integers(1, 300_000), min_size=1, max_size=6),
    requests=st.integers(1, 4),
)
@example(sizes=[1, 7, 512, 1023], requests=3)  # headers and contents cut anywhere
def test_pieces_of_any_size_over_any_requests_split_the_same(
    whole_tree: str, sizes: list[int], requests: int
) -> None:
    """However the bytes come (one byte at a time included), the layer is stored as the
    same map and files, and reads back byte for byte."""
    pieces = cut(TAR, sizes)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(Path(folder) / "r.git")
        try:
            upload_id = store.start_upload("t")
            share = len(pieces) // requests + 1
            for start in range(0, len(pieces), share):
                send(store, upload_id, pieces[start : start + share])
            digest = str(store.finish_upload("t", upload_id, str(digests.of(TAR))).digest)
            assert layer_tree(store, digest) == whole_tree
            assert read(store, "t", digest) == TAR
            assert tmp_packs(store) == set()
        finally:
            store.close()


def test_a_first_write_too_short_to_tell_is_split_at_the_end(store: Store) -> None:
    upload_id = store.start_upload("t")
    send(store, upload_id, [TAR[:100]])
    send(store, upload_id, [TAR[100:]])
    digest = str(store.finish_upload("t", upload_id, str(digests.of(TAR))).digest)
    assert stored_as_files(store, staged("t")) == [digest]
    assert read(store, "t", digest) == TAR


def test_a_sha512_digest_is_split_again_from_the_spool(store: Store) -> None:
    """The split as the bytes arrive hashes with sha256; a sha512 upload is split once
    more at its end, with its own algorithm."""
    upload_id = store.start_upload("t")
    send(store, upload_id, [TAR])
    digest = digests.of(TAR, "sha512")
    assert str(store.finish_upload("t", upload_id, str(digest)).digest) == str(digest)
    listed = git(store, "ls-tree", "--name-only", f"{staged('t')}:.hroot/layers/sha512")
    assert listed.split() == [digest.hex]
    assert read(store, "t", str(digest)) == TAR


def test_more_uploads_at_once_than_live_splits_are_all_stored_as_files(store: Store) -> None:
    datas = [
        tars.python_tar(tarfile.PAX_FORMAT, seed=seed) for seed in range(uploads._LIVE_SPLITS + 2)
    ]
    ids = [store.start_upload("t") for _ in datas]
    for upload_id, data in zip(ids, datas, strict=True):
        send(store, upload_id, [data[: len(data) // 2]])
    assert len(tmp_packs(store)) == uploads._LIVE_SPLITS
    for upload_id, data in zip(ids, datas, strict=True):
        send(store, upload_id, [data[len(data) // 2 :]])
        store.finish_upload("t", upload_id, str(digests.of(data)))
    assert sorted(stored_as_files(store, staged("t"))) == sorted(str(digests.of(d)) for d in datas)
    for data in datas:
        assert read(store, "t", str(digests.of(data))) == data
    assert tmp_packs(store) == set()


def test_an_idle_upload_gives_its_live_split_to_a_new_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads left idle make way (the split of one is dropped, and it is split from its
    spool at its end), so abandoned uploads never hold every live split."""
    monkeypatch.setattr(uploads, "_IDLE_SPLIT_SECONDS", 0.0)
    datas = [
        tars.python_tar(tarfile.PAX_FORMAT, seed=seed) for seed in range(uploads._LIVE_SPLITS + 1)
    ]
    ids = [store.start_upload("t") for _ in datas]
    for upload_id, data in zip(ids[:-1], datas, strict=False):
        send(store, upload_id, [data[: len(data) // 2]])
    before = tmp_packs(store)
    send(store, ids[-1], [datas[-1][: len(datas[-1]) // 2]])
    after = tmp_packs(store)
    assert len(after) == uploads._LIVE_SPLITS and len(after - before) == 1
    for upload_id, data in zip(ids, datas, strict=True):
        send(store, upload_id, [data[len(data) // 2 :]])
        store.finish_upload("t", upload_id, str(digests.of(data)))
    assert len(stored_as_files(store, staged("t"))) == len(datas)
    assert tmp_packs(store) == set()


def test_a_cancelled_upload_and_a_closed_store_leave_no_pack(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "r.git")
    cancelled, left = store.start_upload("t"), store.start_upload("t")
    send(store, cancelled, [TAR[: len(TAR) // 2]])
    send(store, left, [TAR[: len(TAR) // 2]])
    assert len(tmp_packs(store)) == 2
    store.cancel_upload("t", cancelled)
    assert len(tmp_packs(store)) == 1
    store.close()
    assert tmp_packs(store) == set()


def test_a_tar_that_breaks_off_midway_is_stored_whole_and_its_digest_checked(
    store: Store,
) -> None:
    """Once the split is given up, nothing hashed the bytes as they came: the spool is
    hashed at the end, so a wrong digest is still refused."""
    data = bytearray(TAR)
    second = data.index(b"etc/hostname")  # a later header, its checksum broken
    data[second] ^= 0x20
    for digest, refused in (
        (digests.of(bytes(data) + b"!"), True),
        (digests.of(bytes(data)), False),
    ):
        upload_id = store.start_upload("t")
        send(store, upload_id, cut(bytes(data), [65536]))
        if refused:
            with pytest.raises(DigestInvalid):
                store.finish_upload("t", upload_id, str(digest))
        else:
            store.finish_upload("t", upload_id, str(digest))
    assert ".hroot" not in git(store, "ls-tree", "--name-only", staged("t"))
    assert read(store, "t", str(digests.of(bytes(data)))) == bytes(data)
    assert tmp_packs(store) == set()


@settings(max_examples=200, derandomize=True, database=None)
@given(st.binary(max_size=1024) | st.integers(0, 1024).map(lambda n: b"\xff" * n))
def test_the_header_checksum_sums_bytes_as_sum_does(block: bytes) -> None:
    """tarsplit's sum of a header's bytes (from two remainders) is the plain sum, up
    to all bytes 0xff."""
    assert tarsplit._byte_sum(block) == sum(block)
