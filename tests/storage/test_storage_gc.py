"""`Store.gc` (storage.gc) on real repositories, checked with the git command line."""

from __future__ import annotations

import io
import threading
import time
import traceback

import pytest

from storage import Store, digests, names
from storage.errors import BlobUnknown, ManifestBlobUnknown
from storage.gc import NotAlone
from storage.retention import Rules
from tests.storage.images import (
    age,
    age_objects,
    assert_fsck_clean,
    disk_bytes,
    git,
    git_blob_id,
    push_image,
    put,
)

DAY = 24 * 3600


def test_old_spools_and_tmp_files_go_young_ones_stay(store: Store) -> None:
    old, young = store.start_upload("a"), store.start_upload("a")
    with store.open_upload("a", old) as writer:
        writer.write(b"x" * 1000)
    uploads = store.path / "hroot" / "uploads"
    for path in [uploads / old, *(uploads / old).iterdir()]:
        age(path, 2 * DAY)
    old_tmp, young_tmp = (
        store.path / "objects" / "tmp_obj_old",
        store.path / "objects" / "tmp_obj_new",
    )
    old_tmp.write_bytes(b"abandoned")
    young_tmp.write_bytes(b"being written")
    age(old_tmp, 2 * DAY)

    report = store.gc()

    assert (report.spools, report.tmp_files) == (1, 1)
    assert not (uploads / old).exists() and (uploads / young).exists()
    assert not old_tmp.exists() and young_tmp.exists()
    assert store.upload_size("a", young) == 0


def test_a_written_spool_is_young_again(store: Store) -> None:
    upload = store.start_upload("a")
    for path in [
        store.path / "hroot" / "uploads" / upload,
        *(store.path / "hroot" / "uploads" / upload).iterdir(),
    ]:
        age(path, 2 * DAY)
    with store.open_upload("a", upload) as writer:  # a client came back
        writer.write(b"more")
    assert store.gc().spools == 0
    assert store.upload_size("a", upload) == 4


def test_staging_of_a_deleted_repository_goes_and_is_no_longer_served(store: Store) -> None:
    push_image(store, "gone")
    staged = put(store, "gone", b"staged, never pushed")
    git(store, "branch", "-D", "hroot/gone")
    assert store.stat_blob("gone", staged).size == len(b"staged, never pushed")

    assert store.gc().staging_refs == 0  # staged this very day: kept
    age(store.path / names.staging_ref("gone").decode(), 2 * DAY)
    report = store.gc()

    assert (report.staging_refs, report.staged_blobs) == (1, 1)
    assert git(store, "for-each-ref", "refs/hroot/staging/") == ""
    with pytest.raises(BlobUnknown):
        store.stat_blob("gone", staged)
    assert_fsck_clean(store)


def test_a_stale_lock_goes_and_the_next_push_does_not_wait(store: Store) -> None:
    push_image(store, "a")
    lock = store.path / names.branch_ref("a").decode()
    lock = lock.with_name(lock.name + ".lock")
    lock.write_text("0" * 40 + "\n")
    age(lock, 3600)
    packed = store.path / "packed-refs.lock"
    packed.write_text("")
    age(packed, 3600)
    young = store.path / "refs" / "heads" / "hroot" / "young.lock"
    young.write_text("")  # a writer may hold this one now

    assert store.gc().locks == 2
    assert not lock.exists() and not packed.exists() and young.exists()
    young.unlink()
    started = time.monotonic()
    push_image(store, "a", tag="v2")
    assert time.monotonic() - started < 5  # not the 10 s after which a lock is broken
    assert store.tags("a") == ["v1", "v2"]


def test_a_deleted_repository_leaves_the_disk_and_shared_blobs_stay(store: Store) -> None:
    kept = push_image(store, "kept", layer_size=2 << 20)
    shared = kept.layers[0]
    put(store, "doomed", shared)
    put(store, "doomed", kept.config)
    doomed = push_image(store, "doomed", layers=3, layer_size=2 << 20)
    store.put_manifest("doomed", "shared", _manifest_with(kept.config, [shared]))
    git(store, "gc", "--quiet")  # the doomed layers sit in a pack, as after `git gc --auto`
    # ... a while ago. gc counts whole seconds and never takes this second's objects, nor
    # what a recent unreachable object (an old staging tree git gc left loose) refers to
    age_objects(store)
    before = disk_bytes(store.path / "objects")

    git(store, "branch", "-D", "hroot/doomed")
    report = store.gc(expiry=0)

    after = disk_bytes(store.path / "objects")
    assert before - after >= 3 * (2 << 20)  # the unique layers left objects/
    assert report.reclaimed >= 3 * (2 << 20)
    assert report.before.objects > report.after.objects
    for layer in doomed.layers:
        with pytest.raises(BlobUnknown):
            store.stat_blob("doomed", str(digests.of(layer)))
    for data in [kept.config, *kept.layers]:
        with store.open_blob("kept", str(digests.of(data))) as reader:
            assert reader.read() == data
    assert store.get_manifest("kept", "v1").body == kept.manifest
    assert_fsck_clean(store)


def _manifest_with(config: bytes, layers: list[bytes]) -> bytes:
    from tests.documents import image_manifest

    return image_manifest(config, layers)


@pytest.mark.parametrize(
    "rules", [None, Rules(untagged_days=0, keep_commits=3)], ids=["gc", "with-retention"]
)
def test_gc_beside_pushes_and_reads_loses_nothing(store: Store, rules: Rules | None) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    pushed: dict[str, bytes] = {}

    def collect() -> None:
        while not stop.is_set():
            try:
                store.gc(expiry=0, rules=rules)
            except BaseException as error:
                errors.append(error)

    def push(worker: int) -> None:
        for i in range(15):
            tag = f"w{worker}-{i}"
            while True:
                try:
                    image = push_image(store, "busy", tag=tag, layer_size=4096)
                    break
                except ManifestBlobUnknown:
                    continue  # gc expired its staged blobs (expiry 0): upload again
                except BaseException as error:
                    errors.append(error)
                    return
            pushed[tag] = image.manifest
            try:
                for done, body in list(pushed.items()):
                    assert store.get_manifest("busy", done).body == body
                spooled = put_spooled(store, f"s{worker}", image.layers[0])
                assert store.stat_blob(f"s{worker}", spooled).size == 4096
            except BlobUnknown:
                pass  # its staging expired at once (expiry 0)
            except BaseException as error:
                errors.append(error)
                return

    gc_thread = threading.Thread(target=collect)
    gc_thread.start()
    workers = [threading.Thread(target=push, args=(n,)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    gc_thread.join()

    assert errors == [], "".join(traceback.format_exception(errors[0]))
    assert len(pushed) == 45
    for tag, body in pushed.items():
        manifest = store.get_manifest("busy", tag)
        assert manifest.body == body
    assert_fsck_clean(store)


def put_spooled(store: Store, repo: str, data: bytes) -> str:
    """Upload through a spool (no size given), as a chunked push does."""
    digest = str(digests.of(data))
    store.put_blob(repo, digest, io.BytesIO(data))
    return digest


def test_a_short_expiry_is_refused_while_another_store_is_open(store: Store) -> None:
    push_image(store, "a")
    other = Store.open(store.path)
    try:
        with pytest.raises(NotAlone, match="an expiry under 3600 s is safe only without it"):
            store.gc(expiry=0)
        with pytest.raises(NotAlone):
            store.gc(expiry=0, rules=Rules(untagged_days=0))  # nor retention first
        assert store.gc(expiry=3600).spools == 0  # long enough for any write under way
    finally:
        other.close()
    assert store.gc(expiry=0).spools == 0


def test_an_object_written_again_is_made_recent_so_gc_keeps_it(store: Store) -> None:
    """As git does: a write that finds its object there already (loose, or in a pack)
    gives it a new mtime, so a gc counting its expiry from there does not take it."""
    image = push_image(store, "a", layer_size=2000)
    oid = git_blob_id(image.layers[0])
    layer = store.path / "objects" / oid[:2] / oid[2:]
    age(layer, 2 * DAY)
    put(store, "b", image.layers[0])  # the same layer, for another repository
    assert time.time() - layer.stat().st_mtime < 60
    git(store, "gc", "--quiet")
    packs = list((store.path / "objects" / "pack").glob("*.pack"))
    for pack in packs:
        age(pack, 2 * DAY)
    for blob in [image.config, *image.layers]:
        put(store, "b", blob)
    store.put_manifest("b", "v1", image.manifest)  # its blob is in a pack now
    assert max(time.time() - pack.stat().st_mtime for pack in packs) < 60
