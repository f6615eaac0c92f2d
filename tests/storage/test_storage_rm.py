"""Store.remove: a repository's branch, staging ref and upload spools go in one step;
every other repository, and every other upload, stays as it was (checked with git)."""

from __future__ import annotations

import pytest

from storage import Store
from storage.errors import NameUnknown
from tests.storage.images import assert_fsck_clean, git, push_image, put


def refs_of(store: Store) -> list[str]:
    return git(store, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()


def test_remove_takes_branch_staging_and_spools_and_nothing_else(store: Store) -> None:
    push_image(store, "lib/other")
    put(store, "lib/other", b"staged for the other")
    other_upload = store.start_upload("lib/other")
    app = push_image(store, "app")
    tip = git(store, "rev-parse", "hroot/app").strip()
    put(store, "app", b"staged for app")
    uploads = [store.start_upload("app") for _ in range(2)]
    with store.open_upload("app", uploads[0]) as writer:
        writer.write(b"half a layer")
    before = refs_of(store)

    removed = store.remove("app")

    assert (removed.repository, removed.commit, removed.staged, removed.uploads) == (
        "app",
        tip,
        True,
        2,
    )
    after = refs_of(store)
    assert sorted(set(before) - set(after)) == sorted(
        line for line in before if line.split()[0].endswith(("/hroot/app", "/staging/app"))
    )
    assert len(set(before) - set(after)) == 2 and set(after) <= set(before)
    spools = sorted(p.name for p in (store.path / "hroot" / "uploads").iterdir())
    assert spools == [other_upload]
    assert store.repositories() == ["lib/other"]
    with pytest.raises(NameUnknown):
        store.tags("app")
    assert git(store, "cat-file", "-t", tip).strip() == "commit"  # bytes stay until gc
    assert_fsck_clean(store)
    push_image(store, "app")  # the name is free again: a new repository from scratch
    assert git(store, "rev-list", "--count", "hroot/app").strip() == "1"
    assert store.get_manifest("app", "v1").digest != app.digest


def test_remove_of_an_unknown_repository(store: Store) -> None:
    push_image(store, "app")
    put(store, "staged/only", b"no branch yet")
    before = refs_of(store)
    for name in ("nope", "staged/only"):
        with pytest.raises(NameUnknown):
            store.remove(name)
    assert refs_of(store) == before
