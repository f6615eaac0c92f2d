"""storage.fsck on real repositories damaged by hand: each kind of problem is found, and
--repair removes hroot's leftovers, exactly those, checked with the git command line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from storage import Store, digests, fsck, refs
from tests.storage.images import Image, edit_tip, git, push_image, put

OLD = time.time() - fsck.LEFTOVER_SECONDS - 60  # an mtime older than any grace


def backdate(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def blob_path(data: bytes) -> str:
    digest = digests.of(data)
    return f"blobs/{digest.algorithm}/{digest.hex}"


def problems(store: Store) -> list[tuple[str | None, str]]:
    return [(p.repository, p.text) for p in fsck.check(store.path).problems]


@pytest.fixture
def app(store: Store) -> Image:
    push_image(store, "lib/other")
    return push_image(store, "app")


def test_a_registry_hroot_wrote_has_no_problems(store: Store, app: Image) -> None:
    put(store, "app", b"staged, not yet taken in")
    report = fsck.check(store.path)
    assert report.problems == []
    assert report.repositories == 2
    assert report.blobs == 8  # two images: config, two layers, manifest each
    listed = {
        line.split()[2]: int(line.split()[3])  # oid -> size, each blob once
        for branch in ("hroot/app", "hroot/lib+other")
        for line in git(store, "ls-tree", "-r", "-l", branch, "blobs").splitlines()
    }
    assert (report.blobs, report.size) == (len(listed), sum(listed.values()))


def test_a_blob_swapped_by_hand_and_a_missing_layer(store: Store, app: Image) -> None:
    edit_tip(store, "app", {blob_path(app.layers[0]): b"swapped", blob_path(app.layers[1]): None})
    assert problems(store) == [
        ("app", f"manifest {app.digest} needs {digests.of(app.layers[1])}, which is missing"),
        ("app", f"{blob_path(app.layers[0])}: content hashes to {digests.of(b'swapped')}"),
    ]


def test_a_stale_lock_file_and_not_a_fresh_one(store: Store, app: Image) -> None:
    stale = store.path / "refs" / "heads" / "hroot" / "app.lock"
    stale.write_text("0" * 40)
    os.utime(stale, (0, time.time() - refs.STALE_LOCK_SECONDS - 60))
    (store.path / "packed-refs.lock").write_text("")  # fresh: a writer holds it now
    assert problems(store) == [(None, "stale lock file refs/heads/hroot/app.lock")]


def test_a_staging_ref_whose_branch_is_gone(store: Store, app: Image) -> None:
    put(store, "gone", b"uploaded, never pushed")
    put(store, "first/push", b"a first push under way")  # its staging ref is young
    backdate(store.path / "refs" / "hroot" / "staging" / "gone")
    assert problems(store) == [
        ("gone", "refs/hroot/staging/gone: staged blobs of a repository that does not exist")
    ]


def test_a_staged_blob_that_is_not_its_digest(store: Store, app: Image) -> None:
    make_bad_staging(store, "app")
    bad = digests.of(b"what was meant")
    assert problems(store) == [
        ("app", f"staged blobs/sha256/{bad.hex}: content hashes to {digests.of(b'not it')}")
    ]


def test_a_left_over_incoming_ref(store: Store, app: Image) -> None:
    tip = git(store, "rev-parse", "hroot/app").strip()
    git(store, "update-ref", "refs/hroot/incoming/0123/app", tip)
    git(store, "update-ref", "refs/hroot/incoming/4567/app", tip)  # an apply under way
    backdate(store.path / "refs" / "hroot" / "incoming" / "0123" / "app")
    assert problems(store) == [
        (None, "refs/hroot/incoming/0123/app: left by a bundle apply that did not finish")
    ]


def test_a_corrupt_git_object_is_reported_by_git_fsck(store: Store, app: Image) -> None:
    oid = git(store, "rev-parse", f"hroot/app:{blob_path(app.layers[0])}").strip()
    loose = store.path / "objects" / oid[:2] / oid[2:]
    loose.chmod(0o644)
    loose.write_bytes(loose.read_bytes()[:20])
    found = problems(store)
    assert found[0][0] == "app"
    assert found[0][1].startswith(f"{blob_path(app.layers[0])}: git object {oid} is unreadable")
    from_git = [text for where, text in found if text.startswith("git fsck: ")]
    assert from_git and all(where is None for where, t in found if t in from_git)
    assert any(oid in text for text in from_git)


def test_repair_removes_exactly_the_leftovers(store: Store, app: Image) -> None:
    edit_tip(store, "app", {blob_path(app.layers[0]): b"swapped"})  # user data: stays
    put(store, "gone", b"uploaded, never pushed")
    backdate(store.path / "refs" / "hroot" / "staging" / "gone")
    put(store, "first/push", b"a first push under way")
    make_bad_staging(store, "app")
    good = put(store, "app", b"a good staged blob")
    tip = git(store, "rev-parse", "hroot/app").strip()
    git(store, "update-ref", "refs/hroot/incoming/0123/app", tip)
    backdate(store.path / "refs" / "hroot" / "incoming" / "0123" / "app")
    lock = store.path / "refs" / "heads" / "hroot" / "lib" / "x.lock"
    lock.parent.mkdir()
    lock.write_text("")
    os.utime(lock, (0, time.time() - refs.STALE_LOCK_SECONDS - 60))
    before = git(store, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    staged_before = git(store, "ls-tree", "-r", "--name-only", "refs/hroot/staging/app")

    removed = fsck.repair(store.path, fsck.check(store.path))

    bad = digests.of(b"what was meant")
    assert sorted(removed) == sorted(
        [
            "removed stale lock refs/heads/hroot/lib/x.lock",
            f"removed refs/hroot/staging/gone ({before_ref(before, 'staging/gone')[:12]})",
            f"removed refs/hroot/incoming/0123/app ({tip[:12]})",
            f"removed {bad} from refs/hroot/staging/app",
        ]
    )
    after = git(store, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    assert sorted(set(before) - set(after)) == [
        f"refs/hroot/incoming/0123/app {tip}",
        f"refs/hroot/staging/app {before_ref(before, 'staging/app')}",
        f"refs/hroot/staging/gone {before_ref(before, 'staging/gone')}",
    ]
    new_staging = git(store, "rev-parse", "refs/hroot/staging/app").strip()
    assert sorted(set(after) - set(before)) == [f"refs/hroot/staging/app {new_staging}"]
    staged_after = git(store, "ls-tree", "-r", "--name-only", "refs/hroot/staging/app")
    assert staged_before.split() == sorted(
        [f"blobs/sha256/{bad.hex}", blob_path(b"a good staged blob")]
    )
    assert staged_after.split() == [blob_path(b"a good staged blob")]
    assert store.stat_blob("app", good).size == len(b"a good staged blob")
    assert not lock.exists()
    assert problems(store) == [
        ("app", f"{blob_path(app.layers[0])}: content hashes to {digests.of(b'swapped')}")
    ]


def before_ref(lines: list[str], suffix: str) -> str:
    return next(line.split()[1] for line in lines if line.split()[0].endswith(suffix))


def make_bad_staging(store: Store, repo: str) -> None:
    """Stage, with git plumbing, a file named by one digest holding other bytes."""
    wrong = git(store, "hash-object", "-w", "--stdin", input_text="not it").strip()
    meant = digests.of(b"what was meant").hex
    by_hex = git(store, "mktree", input_text=f"100644 blob {wrong}\t{meant}\n").strip()
    alg = git(store, "mktree", input_text=f"040000 tree {by_hex}\tsha256\n").strip()
    root = git(store, "mktree", input_text=f"040000 tree {alg}\tblobs\n").strip()
    git(store, "update-ref", f"refs/hroot/staging/{repo}", root)
