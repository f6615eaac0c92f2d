"""Bundles across an air gap: written by git, read by `git bundle verify`, applied whole,
incremental on top of an earlier one, and refused, changing nothing, when damaged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from storage import Store, digests, names
from storage.bundles import BundleError, BundleRejected, apply, create, heads
from tests.storage.images import assert_fsck_clean, edit_tip, git, push_image

LAYER = 100_000  # random bytes: git cannot compress them, so sizes say what travelled


def fresh(tmp_path: Path, name: str = "target.git") -> Store:
    return Store.open(tmp_path / name)


def verify(store: Store, bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "--git-dir", str(store.path), "bundle", "verify", str(bundle)],
        capture_output=True,
        text=True,
    )


def refs(store: Store) -> str:
    return git(store, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")


def test_a_full_bundle_applies_to_a_fresh_registry(store: Store, tmp_path: Path) -> None:
    app = push_image(store, "library/app", "v1", layer_size=LAYER)
    other = push_image(store, "other", "v1", layer_size=LAYER)
    bundle = tmp_path / "out" / "all.bundle"
    bundle.parent.mkdir()

    created = create(store.path, bundle)
    assert created.repositories == ["library/app", "other"]
    assert created.size == bundle.stat().st_size > 4 * LAYER
    assert [p.name for p in bundle.parent.iterdir()] == ["all.bundle"]  # no partial left
    assert verify(store, bundle).returncode == 0

    target = fresh(tmp_path)
    applied = apply(target.path, bundle)
    assert (applied.added, applied.updated, applied.kept) == (["library/app", "other"], [], [])
    assert target.get_manifest("library/app", "v1").digest == app.digest
    assert target.get_manifest("other", "v1").digest == other.digest
    assert refs(target) == refs(store)
    assert_fsck_clean(target)
    target.close()


def test_a_bundle_of_named_repositories_leaves_the_others_alone(
    store: Store, tmp_path: Path
) -> None:
    push_image(store, "library/app", "v1")
    push_image(store, "other", "v1")
    bundle = tmp_path / "app.bundle"
    assert create(store.path, bundle, ["library/app"]).repositories == ["library/app"]
    assert list(heads(store.path, bundle)) == ["refs/heads/hroot/library+app"]

    target = fresh(tmp_path)
    kept = push_image(target, "local", "v1")
    assert apply(target.path, bundle).added == ["library/app"]
    assert target.repositories() == ["library/app", "local"]
    assert target.get_manifest("local", "v1").digest == kept.digest
    target.close()

    with pytest.raises(BundleError, match=r"no such repository \(nope\)"):
        create(store.path, tmp_path / "nope.bundle", ["library/app", "nope"])
    assert not (tmp_path / "nope.bundle").exists()


def test_an_incremental_bundle_carries_only_what_is_new(store: Store, tmp_path: Path) -> None:
    for tag in ("v1", "v2", "v3"):
        push_image(store, "library/app", tag, layer_size=LAYER)
    push_image(store, "other", "v1", layer_size=LAYER)
    first = tmp_path / "first.bundle"
    create(store.path, first)
    newest = push_image(store, "library/app", "v4", layer_size=LAYER)

    later = tmp_path / "later.bundle"
    created = create(store.path, later, since=str(first))
    assert created.repositories == ["library/app"]
    whole = create(store.path, tmp_path / "whole.bundle")
    assert created.size < whole.size / 3  # one image of five

    target = fresh(tmp_path)
    with pytest.raises(BundleError, match="incremental: apply the bundle it was made after"):
        apply(target.path, later)
    assert refs(target) == ""
    apply(target.path, first)
    applied = apply(target.path, later)
    assert (applied.added, applied.updated) == ([], ["library/app"])
    assert target.get_manifest("library/app", "v4").digest == newest.digest
    assert refs(target) == refs(store)
    assert_fsck_clean(target)

    again = apply(target.path, first)  # an older bundle does not take a registry back
    assert (again.added, again.updated, again.kept) == ([], [], ["library/app"])
    assert refs(target) == refs(store)
    target.close()

    nothing = create(store.path, tmp_path / "nothing.bundle", since=str(whole.file))
    assert nothing.repositories == []
    assert not (tmp_path / "nothing.bundle").exists()


def test_a_bundle_since_a_date(store: Store, tmp_path: Path) -> None:
    """Commits before the date stay out, and the bundle needs them: they are its
    prerequisites. The older commits are dated 2020 by hand (a push is dated now)."""
    old = push_image(store, "library/app", "v1", layer_size=LAYER)
    push_image(store, "quiet", "v1")
    for name in ("library/app", "quiet"):
        redate(store, name, "2020-01-01T00:00:00Z")
    before = tmp_path / "before.bundle"
    create(store.path, before)
    new = push_image(store, "library/app", "v2", layer_size=LAYER)

    dated = tmp_path / "dated.bundle"
    created = create(store.path, dated, since="2021-01-01")
    assert created.repositories == ["library/app"]  # quiet has nothing since
    assert created.size < 3 * LAYER
    check = verify(store, dated)
    assert check.returncode == 0, check.stderr
    assert "requires this ref" in check.stdout + check.stderr

    target = fresh(tmp_path)
    with pytest.raises(BundleError, match="incremental"):
        apply(target.path, dated)
    apply(target.path, before)
    assert apply(target.path, dated).updated == ["library/app"]
    assert target.get_manifest("library/app", "v1").digest == old.digest
    assert target.get_manifest("library/app", "v2").digest == new.digest
    assert_fsck_clean(target)
    target.close()

    with pytest.raises(BundleError, match="neither a bundle nor a past date"):
        create(store.path, tmp_path / "x.bundle", since="yesterdy")
    with pytest.raises(BundleError, match="no such bundle"):
        create(store.path, tmp_path / "x.bundle", since=str(tmp_path / "missing.bundle"))


def redate(store: Store, name: str, date: str) -> None:
    """Replace the branch's one commit by the same tree, committed at `date`."""
    branch = names.branch_ref(name).decode()
    tree = git(store, "rev-parse", f"{branch}^{{tree}}").strip()
    result = subprocess.run(
        ["git", "--git-dir", str(store.path), "commit-tree", tree, "-m", "push, long ago"],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date},
    )
    assert result.returncode == 0, result.stderr
    git(store, "update-ref", branch, result.stdout.strip())


def test_a_bundle_with_a_tampered_blob_changes_nothing(store: Store, tmp_path: Path) -> None:
    app = push_image(store, "library/app", "v1")
    target = fresh(tmp_path)
    first = tmp_path / "first.bundle"
    create(store.path, first)
    apply(target.path, first)
    before = refs(target)

    layer = digests.of(app.layers[0])
    path = f"blobs/{layer.algorithm}/{layer.hex}"
    push_image(store, "library/app", "v2")
    edit_tip(store, "library/app", {path: b"a layer swapped by hand"})
    push_image(store, "newcomer", "v1")
    damaged = tmp_path / "damaged.bundle"
    create(store.path, damaged)
    assert verify(store, damaged).returncode == 0  # git sees nothing wrong

    with pytest.raises(BundleRejected) as rejected:
        apply(target.path, damaged)
    swapped = digests.of(b"a layer swapped by hand")
    assert rejected.value.problems == [f"hroot/library+app: {path}: content hashes to {swapped}"]
    assert refs(target) == before  # the app as it was, and no newcomer
    assert git(target, "for-each-ref", "refs/hroot/") == ""  # nor what was checked
    assert target.repositories() == ["library/app"]
    assert target.get_manifest("library/app", "v1").digest == app.digest
    target.close()


def test_what_is_not_a_bundle(store: Store, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"not a bundle\n")
    with pytest.raises(BundleError, match="not a readable bundle"):
        apply(store.path, junk)
    with pytest.raises(BundleError, match="not a readable bundle"):
        apply(store.path, tmp_path / "missing.bundle")
