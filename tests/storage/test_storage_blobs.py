"""Blobs and uploads: streaming writes checked against their digest, reads by range,
loose or packed, mounts, deletes, and what each kind of bad input gets."""

from __future__ import annotations

import io
import os

import pytest

from storage import Store, digests, objects
from storage.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    NameInvalid,
    SizeInvalid,
    UploadOutOfOrder,
)
from tests.documents import image_manifest
from tests.storage.images import assert_fsck_clean, git, push_image, put


def loose_objects(store: Store) -> set[str]:
    return {
        folder.name + f.name
        for folder in (store.path / "objects").iterdir()
        if len(folder.name) == 2
        for f in folder.iterdir()
    }


def read_all(store: Store, repo: str, digest: str, offset: int = 0) -> bytes:
    with store.open_blob(repo, digest) as reader:
        reader.skip(offset)
        return b"".join(iter(lambda: reader.read(7000), b""))


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_blob_round_trip(store: Store, algorithm: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = put(store, "img", data, algorithm)
    assert store.stat_blob("img", digest).size == len(data)
    assert read_all(store, "img", digest) == data
    # the blob is the same bytes as a git object, staged on the repository's staging ref
    assert git(store, "cat-file", "-t", f"refs/hroot/staging/img:blobs/{algorithm}/{digest[7:]}")
    hexdigest = digest.split(":")[1]
    assert git(store, "ls-tree", "-r", "refs/hroot/staging/img").count(hexdigest) == 1
    assert_fsck_clean(store)


def test_range_reads_and_reads_after_git_gc(store: Store) -> None:
    data = os.urandom(2 * 1024 * 1024)
    image = push_image(store, "img", layers=0)
    digest = put(store, "img", data)
    assert read_all(store, "img", digest, offset=1_000_001) == data[1_000_001:]
    # a manifest takes the blob into the branch; `git gc` packs it
    store.put_manifest("img", "v2", image_manifest(image.config, [data]))
    git(store, "gc", "--quiet")
    assert any(p.suffix == ".pack" for p in (store.path / "objects" / "pack").iterdir())
    assert read_all(store, "img", digest) == data
    assert read_all(store, "img", digest, offset=len(data) - 5) == data[-5:]
    assert store.stat_blob("img", digest).size == len(data)
    assert_fsck_clean(store)


def test_wrong_digest_is_refused_and_leaves_nothing_behind(store: Store) -> None:
    before = loose_objects(store)
    wrong = str(digests.of(b"something else"))
    with pytest.raises(DigestInvalid):
        store.put_blob("img", wrong, io.BytesIO(b"data"), 4)
    upload = store.start_upload("img")
    with store.open_upload("img", upload) as writer:
        writer.write(b"data")
    with pytest.raises(DigestInvalid):
        store.finish_upload("img", upload, wrong)
    assert loose_objects(store) == before
    with pytest.raises(BlobUploadUnknown):  # a failed finish ends the upload
        store.upload_size("img", upload)
    with pytest.raises(BlobUnknown):
        store.stat_blob("img", wrong)


def test_truncated_or_overlong_stream_is_refused(store: Store) -> None:
    data = b"x" * 100
    with pytest.raises(SizeInvalid):
        store.put_blob("img", str(digests.of(data)), io.BytesIO(data[:60]), len(data))
    with pytest.raises(SizeInvalid):
        store.put_blob("img", str(digests.of(data)), io.BytesIO(data), 50)
    assert loose_objects(store) == set()


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "", "x"])
def test_malformed_digests_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(DigestInvalid):
        store.put_blob("img", bad, io.BytesIO(b""), 0)
    with pytest.raises(DigestInvalid):
        store.stat_blob("img", bad)


def test_invalid_repository_name_is_refused(store: Store) -> None:
    digest = str(digests.of(b"x"))
    with pytest.raises(NameInvalid):
        store.put_blob("Bad Name", digest, io.BytesIO(b"x"), 1)
    with pytest.raises(NameInvalid):
        store.start_upload("a//b")
    with pytest.raises(NameInvalid):
        store.stat_blob("../x", digest)


def test_chunked_upload_in_order_and_out_of_order(store: Store) -> None:
    data = os.urandom(10_000)
    upload = store.start_upload("img")
    assert store.upload_size("img", upload) == 0
    with store.open_upload("img", upload, offset=0) as writer:
        writer.write(data[:4000])
    assert store.upload_size("img", upload) == 4000
    with pytest.raises(UploadOutOfOrder) as raised:
        store.open_upload("img", upload, offset=5000)
    assert raised.value.size == 4000
    with store.open_upload("img", upload, offset=4000) as writer:
        writer.write(data[4000:])
    info = store.finish_upload("img", upload, str(digests.of(data)))
    assert info.size == len(data)
    assert read_all(store, "img", info.digest) == data


# (bytes each write session announces, bytes it writes), as fractions of the blob
ANNOUNCED_WRITES = {
    "as announced": [(1, 1)],
    "resumed after a break": [(1, 0.5), (0.5, 0.5)],
    "more than announced": [(0.5, 1)],
    "less than announced": [(2, 1)],
    "two announced chunks": [(0.5, 0.5), (0.5, 0.5)],
    "not announced": [(None, 1)],
}


@pytest.mark.parametrize("size", [100_001, objects.PARALLEL_HASH_SIZE + 1])
@pytest.mark.parametrize("case", ANNOUNCED_WRITES)
def test_uploads_hashed_as_they_arrive_get_gits_id(store: Store, size: int, case: str) -> None:
    """A first write that announces its length has the git id hashed for a blob of that
    size; whatever the writes turn out to be, the object is git's."""
    data = os.urandom(size)
    upload = store.start_upload("img")
    at = 0
    writes = ANNOUNCED_WRITES[case]
    for number, (announced, written) in enumerate(writes, 1):
        length = None if announced is None else int(size * announced)
        end = size if number == len(writes) else at + int(size * written)
        with store.open_upload("img", upload, offset=at, length=length) as writer:
            for piece in range(at, end, 40_000):  # in pieces, as the registry writes
                writer.write(data[piece : min(piece + 40_000, end)])
        at = end
    digest = digests.of(data)
    assert store.finish_upload("img", upload, str(digest)).size == size
    staged = git(store, "rev-parse", f"refs/hroot/staging/img:blobs/sha256/{digest.hex}")
    copy = store.path.parent / "data"
    copy.write_bytes(data)
    assert staged == git(store, "hash-object", str(copy))
    assert read_all(store, "img", str(digest)) == data
    assert_fsck_clean(store)


def test_an_announced_upload_is_still_checked_against_its_sha512(store: Store) -> None:
    data = os.urandom(5000)
    wrong, right = digests.of(b"other", "sha512"), digests.of(data, "sha512")
    for claimed, ok in [(wrong, False), (right, True)]:
        upload = store.start_upload("img")
        with store.open_upload("img", upload, length=len(data)) as writer:
            writer.write(data)
        if ok:
            assert store.finish_upload("img", upload, str(claimed)).size == len(data)
        else:
            with pytest.raises(DigestInvalid):
                store.finish_upload("img", upload, str(claimed))
    assert read_all(store, "img", str(digests.of(data, "sha512"))) == data


def test_upload_of_unknown_size_through_put_blob(store: Store) -> None:
    data = os.urandom(300_000)
    info = store.put_blob("img", str(digests.of(data, "sha512")), io.BytesIO(data))
    assert read_all(store, "img", info.digest) == data


def test_upload_survives_a_restart(store: Store) -> None:
    """The in-memory hash is lost with the process; finishing checks the spool instead."""
    data = os.urandom(50_000)
    upload = store.start_upload("img")
    with store.open_upload("img", upload) as writer:
        writer.write(data)
    reopened = Store.open(store.path)
    with pytest.raises(DigestInvalid):
        reopened.finish_upload("img", upload, str(digests.of(b"other")))
    upload = reopened.start_upload("img")
    with reopened.open_upload("img", upload) as writer:
        writer.write(data)
    again = Store.open(store.path)
    assert again.finish_upload("img", upload, str(digests.of(data))).size == len(data)
    assert read_all(again, "img", str(digests.of(data))) == data


def test_unknown_uploads_and_busy_uploads(store: Store) -> None:
    upload = store.start_upload("img")
    for bad in ["nope", "../../etc", "0" * 32]:
        with pytest.raises(BlobUploadUnknown):
            store.upload_size("img", bad)
    with pytest.raises(BlobUploadUnknown):  # an upload belongs to its repository
        store.open_upload("other", upload)
    with store.open_upload("img", upload), pytest.raises(BlobUploadInvalid):
        store.open_upload("img", upload)
    store.cancel_upload("img", upload)
    with pytest.raises(BlobUploadUnknown):
        store.open_upload("img", upload)
    assert list((store.path / "hroot" / "uploads").iterdir()) == []


def test_mount_links_the_same_git_object(store: Store) -> None:
    data = os.urandom(5000)
    digest = put(store, "a", data)
    assert store.mount_blob("b", digest, from_repo="c") is None
    assert store.mount_blob("b", digest, from_repo="a").size == len(data)
    assert read_all(store, "b", digest) == data
    assert git(store, "rev-parse", f"refs/hroot/staging/a:blobs/sha256/{digest[7:]}") == git(
        store, "rev-parse", f"refs/hroot/staging/b:blobs/sha256/{digest[7:]}"
    )


def test_delete_blob_from_staging_and_from_the_layout(store: Store) -> None:
    staged = put(store, "img", b"staged")
    store.delete_blob("img", staged)
    with pytest.raises(BlobUnknown):
        store.stat_blob("img", staged)
    image = push_image(store, "img")
    layer = str(digests.of(image.layers[0]))
    store.delete_blob("img", layer)
    with pytest.raises(BlobUnknown):
        store.open_blob("img", layer)
    assert git(store, "log", "-1", "--format=%s", "hroot/img") == f"delete blob img@{layer}\n"
    with pytest.raises(BlobUnknown):
        store.delete_blob("img", layer)
    assert_fsck_clean(store)


def test_upload_cut_short_by_a_crash_resumes_from_its_last_whole_chunk(store: Store) -> None:
    data = os.urandom(100_000)
    upload = store.start_upload("img")
    with store.open_upload("img", upload) as writer:
        writer.write(data[:60_000])
    spool = store.path / "hroot" / "uploads" / upload / "data"
    with open(spool, "ab") as torn:  # a crash in the middle of the next write
        torn.write(b"\x00\x10\x27")
    restarted = Store.open(store.path)
    assert restarted.upload_size("img", upload) == 60_000
    with restarted.open_upload("img", upload, offset=60_000) as writer:
        writer.write(data[60_000:])
    assert restarted.finish_upload("img", upload, str(digests.of(data))).size == len(data)
    assert read_all(restarted, "img", str(digests.of(data))) == data
    assert_fsck_clean(restarted)
