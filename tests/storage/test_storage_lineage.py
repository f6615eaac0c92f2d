"""Lineage (DESIGN.md §2.3): a pushed image's base becomes a parent of its commit, found
through the in-memory index of storage.lineage, which must follow refs moved by hand."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from storage import Store, digests, gitcli
from tests.documents import OCI_INDEX, OCI_MANIFEST, image_manifest
from tests.storage.images import Image, assert_fsck_clean, git, put

# how `hroot log` parses a Base-Image trailer: repo@digest, then the platform if any
TRAILER = re.compile(r"^(\S+)@(\S+)(?: \((\S+)\))?$")


def layer(name: str) -> bytes:
    """A layer's content, told apart by its name (random bytes after it)."""
    return name.encode() + os.urandom(64)


def push(store: Store, repo: str, tag: str | None, layers: list[bytes]) -> Image:
    """Upload a fresh config and these layers to `repo`, then put their manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(4).hex()})
    for data in [config.encode(), *layers]:
        put(store, repo, data)
    image = Image(repo, config.encode(), layers, image_manifest(config.encode(), layers))
    store.put_manifest(repo, tag or image.digest, image.manifest)
    return image


def tip(store: Store, repo: str) -> str:
    return git(store, "rev-parse", f"refs/heads/hroot/{repo.replace('/', '+')}").strip()


def parents(store: Store, repo: str) -> list[str]:
    return git(store, "log", "-1", "--format=%P", f"hroot/{repo.replace('/', '+')}").split()


def base_trailers(store: Store, repo: str) -> list[str]:
    """The Base-Image trailers of the tip commit, each checked against `hroot log`'s regex."""
    values = git(
        store,
        "log",
        "-1",
        "--format=%(trailers:key=Base-Image,valueonly)",
        f"hroot/{repo.replace('/', '+')}",
    ).split("\n")
    found = [value for value in values if value]
    assert all(TRAILER.match(value) for value in found), found
    return found


def merges(store: Store, repo: str) -> list[list[str]]:
    """The further parents of each commit of the branch's own history that has some."""
    branch = f"hroot/{repo.replace('/', '+')}"
    found = [
        line.split()[1:]
        for line in git(store, "log", "--first-parent", "--format=%P", branch).splitlines()
    ]
    return [extra for extra in found if extra]


def build_index(store: Store) -> None:
    """Build the lineage index before what a test does next, as a server does at start."""
    store.prepare_lineage()


def test_base_is_found_in_another_repository(store: Store) -> None:
    build_index(store)  # the base is then learned from the store's own commit
    a, b = layer("a"), layer("b")
    base = push(store, "library/base", "v1", [a, b])
    base_push = tip(store, "library/base")
    push(store, "library/base", "v2", [layer("unrelated"), layer("other")])  # it moves on
    push(store, "app", "v1", [a, b, layer("app")])
    assert parents(store, "app")[1] == base_push
    assert base_trailers(store, "app") == [f"library/base@{base.digest}"]
    # an image built on nothing in the registry has its previous tip as only parent
    push(store, "app", "v2", [layer("x"), layer("y")])
    assert len(parents(store, "app")) == 1
    assert base_trailers(store, "app") == []
    assert_fsck_clean(store)


def test_the_longest_base_wins(store: Store) -> None:
    a, b, c = layer("a"), layer("b"), layer("c")
    push(store, "one", "v1", [a])
    two = push(store, "two", "v1", [a, b])
    two_push = tip(store, "two")
    push(store, "three", "v1", [a, b, c])  # as long as the image itself: not a proper prefix
    push(store, "app", "v1", [a, b, c])
    assert parents(store, "app")[1:] == [two_push]
    assert base_trailers(store, "app") == [f"two@{two.digest}"]


def test_a_base_deleted_by_hand_is_not_used(store: Store) -> None:
    a, b, c = layer("a"), layer("b"), layer("c")
    short = push(store, "short", "v1", [a])
    short_push = tip(store, "short")
    push(store, "long", "v1", [a, b])
    build_index(store)
    git(store, "branch", "-D", "hroot/long")
    push(store, "app", "v1", [a, b, c])
    assert parents(store, "app")[1:] == [short_push]
    assert base_trailers(store, "app") == [f"short@{short.digest}"]
    git(store, "branch", "-D", "hroot/short")
    push(store, "app", "v2", [a, b, layer("d")])
    assert len(parents(store, "app")) == 1
    assert_fsck_clean(store)


def test_a_base_fetched_by_hand_is_found(store: Store, tmp_path: Path) -> None:
    build_index(store)
    a, b = layer("a"), layer("b")
    other = Store.open(tmp_path / "other.git")
    try:
        base = push(other, "library/base", "v1", [a, b])
        base_push = tip(other, "library/base")
    finally:
        other.close()
    git(store, "fetch", str(tmp_path / "other.git"), "refs/heads/hroot/*:refs/heads/hroot/*")
    push(store, "app", "v1", [a, b, layer("app")])
    assert parents(store, "app")[1] == base_push
    assert base_trailers(store, "app") == [f"library/base@{base.digest}"]
    assert_fsck_clean(store)


def test_a_base_moved_by_hand_is_found_where_it_is_now(store: Store) -> None:
    a, b, c, d = layer("a"), layer("b"), layer("c"), layer("d")
    push(store, "base", "v1", [a, b])
    moved = push(store, "scratch", "v1", [c, d])
    moved_push = tip(store, "scratch")
    build_index(store)
    git(store, "update-ref", "refs/heads/hroot/base", moved_push)
    git(store, "branch", "-D", "hroot/scratch")
    push(store, "app", "v1", [c, d, layer("app")])
    assert parents(store, "app")[1] == moved_push
    assert base_trailers(store, "app") == [f"base@{moved.digest}"]
    push(store, "app", "v2", [a, b, layer("app")])  # the image `base` no longer holds
    assert len(parents(store, "app")) == 1

    # a ref written in place, not renamed over (as a person's `echo` would)
    written = push(store, "written", "v1", [layer("e"), layer("f")])
    written_push = tip(store, "written")
    git(store, "branch", "-D", "hroot/written")
    (store.path / "refs" / "heads" / "hroot" / "base").write_text(written_push + "\n")
    push(store, "app", "v3", [*written.layers, layer("app")])
    assert parents(store, "app")[1] == written_push
    assert base_trailers(store, "app") == [f"base@{written.digest}"]
    assert_fsck_clean(store)


def test_packing_refs_hides_no_base(store: Store, tmp_path: Path) -> None:
    a, b = layer("a"), layer("b")
    base = push(store, "base", "v1", [a, b])
    base_push = tip(store, "base")
    doomed = push(store, "doomed", "v1", [layer("c"), layer("d")])
    build_index(store)
    git(store, "pack-refs", "--all", "--prune")
    assert not list((store.path / "refs" / "heads").glob("hroot/*"))
    push(store, "app", "v1", [a, b, layer("app")])
    assert parents(store, "app")[1] == base_push
    assert base_trailers(store, "app") == [f"base@{base.digest}"]

    git(store, "pack-refs", "--all", "--prune")
    git(store, "branch", "-D", "hroot/doomed")  # a packed ref: packed-refs is rewritten
    push(store, "app", "v2", [*doomed.layers, layer("app")])
    assert len(parents(store, "app")) == 1

    # a branch fetched into the folder of loose refs that packing had removed
    other = Store.open(tmp_path / "other.git")
    try:
        fetched = push(other, "fetched", "v1", [layer("e"), layer("f")])
        fetched_push = tip(other, "fetched")
    finally:
        other.close()
    git(store, "pack-refs", "--all", "--prune")
    git(store, "fetch", str(tmp_path / "other.git"), "refs/heads/hroot/*:refs/heads/hroot/*")
    push(store, "app", "v3", [*fetched.layers, layer("app")])
    assert parents(store, "app")[1] == fetched_push
    assert_fsck_clean(store)


def test_an_index_gets_a_parent_per_platform(store: Store) -> None:
    amd_base = push(store, "base", "amd64", [layer("amd-os"), layer("amd-libs")])
    amd_push = tip(store, "base")
    arm_base = push(store, "base", "arm64", [layer("arm-os"), layer("arm-libs")])
    arm_push = tip(store, "base")
    children = {
        "linux/amd64": push(store, "app", None, [*amd_base.layers, layer("app-amd")]),
        "linux/arm64": push(store, "app", None, [*arm_base.layers, layer("app-arm")]),
        "linux/arm/v7": push(store, "app", None, [*amd_base.layers, layer("odd")]),
        "linux/riscv64": push(store, "app", None, [layer("no-base"), layer("at-all")]),
    }
    entries = []
    for platform, child in children.items():
        os_name, architecture, *variant = platform.split("/")
        described = {"os": os_name, "architecture": architecture}
        if variant:
            described["variant"] = variant[0]
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": child.digest,
                "size": len(child.manifest),
                "platform": described,
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    before = tip(store, "app")
    store.put_manifest("app", "v1", index.encode())

    # each distinct base commit is merged once: here by the children pushed before
    assert parents(store, "app") == [before]
    assert merges(store, "app") == [[arm_push], [amd_push]]
    assert base_trailers(store, "app") == [
        f"base@{amd_base.digest} (linux/amd64)",
        f"base@{arm_base.digest} (linux/arm64)",
        f"base@{amd_base.digest} (linux/arm/v7)",
    ]
    # each image pushed by digest got its own base, without a platform
    assert base_trailers(store, "app~1") == []  # riscv64: built on nothing stored
    assert base_trailers(store, "app~2") == [f"base@{amd_base.digest}"]  # linux/arm/v7
    digest = str(digests.of(index.encode()))
    assert f"Manifest-Digest: {digest}" in git(store, "log", "-1", "--format=%B", "hroot/app")
    assert_fsck_clean(store)


def test_a_base_is_merged_once_until_it_moves(store: Store) -> None:
    base = push(store, "base", "v1", [layer("os"), layer("libs")])
    first_base_push = tip(store, "base")
    app = push(store, "app", "v1", [*base.layers, layer("app")])
    store.put_manifest("app", "latest", app.manifest)  # the same image, one more tag
    push(store, "app", "v2", [*base.layers, layer("app v2")])
    assert merges(store, "app") == [[first_base_push]]
    assert base_trailers(store, "app") == [f"base@{base.digest}"]  # every push names it

    base2 = push(store, "base", "v2", [layer("os 2"), layer("libs 2")])
    push(store, "app", "v3", [*base2.layers, layer("app")])
    assert merges(store, "app") == [[tip(store, "base")], [first_base_push]]
    assert_fsck_clean(store)


def test_a_base_in_the_same_repository_is_no_parent(store: Store) -> None:
    a, b = layer("a"), layer("b")
    push(store, "app", "base", [a, b])
    push(store, "app", "v1", [a, b, layer("app")])
    assert len(parents(store, "app")) == 1
    assert base_trailers(store, "app") == []

    # the longest base is in the repository itself: a shorter one elsewhere is not its base
    c = layer("c")
    push(store, "library/base", "v1", [a])
    push(store, "app", "v2", [a, b, c])
    assert len(parents(store, "app")) == 1
    # the same image in another repository too: that one is the base
    other = push(store, "library/other", "v1", [a, b])
    other_push = tip(store, "library/other")
    push(store, "app", "v3", [a, b, layer("v3")])
    assert parents(store, "app")[1:] == [other_push]
    assert base_trailers(store, "app") == [f"library/other@{other.digest}"]


def test_a_base_pushed_by_another_store_is_found(store: Store) -> None:
    build_index(store)
    second = Store.open(store.path)  # as another hroot process on the same repository
    try:
        build_index(second)
        a, b = layer("a"), layer("b")
        base = push(second, "library/base", "v1", [a, b])
        base_push = tip(second, "library/base")
        push(store, "app", "v1", [a, b, layer("app")])
        assert parents(store, "app")[1] == base_push
        assert base_trailers(store, "app") == [f"library/base@{base.digest}"]
        # and the other way round, after the second store moved the base on
        v2 = push(second, "library/base", "v2", [*base.layers, layer("v2")])
        base_v2_push = tip(second, "library/base")
        push(store, "app", "v2", [*v2.layers, layer("app")])
        assert parents(store, "app")[1] == base_v2_push
        assert base_trailers(store, "app") == [f"library/base@{v2.digest}"]
    finally:
        second.close()
    assert_fsck_clean(store)


def test_a_restarted_store_reads_many_manifests_through_git_and_finds_bases(
    store: Store,
) -> None:
    """A layout of more manifests than _READ_AHEAD is read in one `git cat-file --batch`
    when a new store builds its index (as after a restart), and its bases are found."""
    a = layer("a")
    bases = [push(store, "library/base", f"v{n}", [a, layer(f"b{n}")]) for n in range(40)]
    restarted = Store.open(store.path)
    try:
        build_index(restarted)
        for chosen in (bases[0], bases[23], bases[39]):
            push(restarted, "app", "v1", [*chosen.layers, layer("app")])
            assert base_trailers(restarted, "app") == [f"library/base@{chosen.digest}"]
    finally:
        restarted.close()


def test_git_reads_objects_in_order_and_says_which_are_missing(store: Store) -> None:
    base = push(store, "library/base", "v1", [layer("a")])
    oid = git(store, "rev-parse", f"{tip(store, 'library/base')}:index.json").strip().encode()
    missing = b"0" * 40
    index = git(store, "cat-file", "blob", oid.decode()).encode()

    found = list(gitcli.read_objects(store.path, [oid, missing, oid]))

    assert found == [(oid, index), (missing, None), (oid, index)]
    assert base.digest in index.decode()
