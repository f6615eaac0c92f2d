"""Fetching registry branches with git: from a path, forced to what the source says,
pruned on request, never a staging ref."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Store
from storage.transport import TransportError, fetch
from tests.storage.images import assert_fsck_clean, git, push_image, put


def test_fetch_copies_branches_only_and_prunes_on_request(store: Store, tmp_path: Path) -> None:
    app = push_image(store, "library/app", "v1")
    push_image(store, "gone", "v1")
    put(store, "library/app", b"an upload no manifest took in yet")  # staged, not pushed
    follower = Store.open(tmp_path / "follower.git")

    fetched = fetch(follower.path, str(store.path))
    assert set(fetched.changed) == {"refs/heads/hroot/library+app", "refs/heads/hroot/gone"}
    assert all(old is None for old, _ in fetched.changed.values())
    assert follower.get_manifest("library/app", "v1").digest == app.digest
    assert git(follower, "for-each-ref", "refs/hroot/") == ""

    old_tip = git(follower, "rev-parse", "hroot/library+app").strip()
    git(store, "branch", "-D", "hroot/gone")
    moved = push_image(store, "library/app", "v1")
    kept = fetch(follower.path, str(store.path))
    new_tip = git(store, "rev-parse", "hroot/library+app").strip()
    assert kept.changed == {"refs/heads/hroot/library+app": (old_tip, new_tip)}
    assert follower.repositories() == ["gone", "library/app"]

    pruned = fetch(follower.path, str(store.path), prune=True)
    assert list(pruned.changed) == ["refs/heads/hroot/gone"]
    assert pruned.changed["refs/heads/hroot/gone"][1] is None
    assert follower.repositories() == ["library/app"]
    assert follower.get_manifest("library/app", "v1").digest == moved.digest
    assert_fsck_clean(follower)


def test_a_source_that_is_not_there_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="git fetch"):
        fetch(store.path, str(tmp_path / "nowhere.git"))
