"""The push index (storage.pushes) through `Store.pushes` and `Store.image`, each answer
checked against `git log --first-parent --grep` on the command line, as the branch grows,
deletes, is moved back by hand and is rewritten by retention."""

from __future__ import annotations

import pytest

from storage import Store
from storage.errors import NameUnknown
from storage.retention import Rules
from tests.storage.images import git, push_image


def git_push(store: Store, repo: str, digest: str) -> str | None:
    """The newest first-parent commit of repo that pushed `digest`, as git finds it."""
    found = git(
        store,
        "log",
        "--first-parent",
        "-1",
        "--format=%H %ct",
        "--all-match",
        "--grep=^push ",
        f"--grep=^Manifest-Digest: {digest}$",
        f"hroot/{repo}",
    ).split()
    return found[0] if found else None


def assert_as_git_says(store: Store, repo: str, digests: list[str]) -> None:
    pushes = store.pushes(repo)
    pushed_by_git = git(
        store, "log", "--first-parent", "--grep=^push ", "--format=%H", f"hroot/{repo}"
    ).split()
    assert {p.commit for p in pushes.values()} <= set(pushed_by_git)
    for digest in digests:
        expected = git_push(store, repo, digest)
        found = pushes.get(digest)
        assert (found.commit if found else None) == expected, digest
        if found is not None:
            committed = git(store, "log", "-1", "--format=%ct", found.commit).strip()
            assert int(found.time.timestamp()) == int(committed)
    for digest in stored(store, repo):  # what `hroot show` says is the same
        assert store.image(repo, digest, inspect_layers=False).pushed == pushes.get(digest)
    fresh = Store.open(store.path, create=False)  # no index yet: one `git log --grep` each
    try:
        for digest in stored(fresh, repo):
            assert fresh.image(repo, digest, inspect_layers=False).pushed == pushes.get(digest)
    finally:
        fresh.close()


def stored(store: Store, repo: str) -> set[str]:
    """The manifests the tip of repo holds."""
    return {store.get_manifest(repo, tag).digest for tag in store.tags(repo)}


def test_a_manifest_pushed_twice_is_known_by_its_newest_push(store: Store) -> None:
    first = push_image(store, "app", "v1").digest
    assert_as_git_says(store, "app", [first])
    second = push_image(store, "app", "v1").digest
    assert_as_git_says(store, "app", [first, second])  # extended from the old tip
    again = store.put_manifest("app", "v2", store.get_manifest("app", first).body)
    assert again.digest == first

    assert_as_git_says(store, "app", [first, second])
    assert store.pushes("app")[first].commit == git(store, "rev-parse", "hroot/app").strip()
    by_digest = push_image(store, "app.x", None).digest  # `push NAME@DIGEST`
    assert_as_git_says(store, "app.x", [by_digest])
    assert store.pushes("app.x")[by_digest] is not None


def test_a_delete_is_no_push(store: Store) -> None:
    kept = push_image(store, "app", "v1").digest
    gone = push_image(store, "app", "v2").digest
    store.pushes("app")
    store.delete_manifest("app", gone)
    store.delete_tag("app", "v1")

    assert_as_git_says(store, "app", [kept, gone])
    assert store.pushes("app")[gone].commit == git(store, "rev-parse", "hroot/app~2").strip()


def test_a_branch_moved_back_by_hand_is_read_again(store: Store) -> None:
    first = push_image(store, "app", "v1").digest
    older = git(store, "rev-parse", "hroot/app").strip()
    later = push_image(store, "app", "v2").digest
    assert later in store.pushes("app")

    git(store, "branch", "-f", "hroot/app", older)

    assert later not in store.pushes("app")
    assert_as_git_says(store, "app", [first, later])
    newer = push_image(store, "app", "v3").digest  # on the older commit, not the cached tip
    assert_as_git_says(store, "app", [first, later, newer])


def test_a_history_rewritten_by_retention_is_read_again(store: Store) -> None:
    digests = [push_image(store, "app", "latest").digest for _ in range(6)]
    assert set(digests) <= set(store.pushes("app"))

    assert store.retain(Rules(keep_commits=3)).commits == {"app": 3}

    assert_as_git_says(store, "app", digests)
    assert set(store.pushes("app")) == set(digests[-3:])


def test_a_repository_without_a_branch_is_unknown(store: Store) -> None:
    with pytest.raises(NameUnknown):
        store.pushes("nothing")
