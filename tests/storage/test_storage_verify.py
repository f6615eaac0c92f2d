"""The checks of `hroot fsck` and `hroot bundle apply` (storage.verify): silent on a
registry hroot wrote, and a line naming the place for each kind of damage made by hand."""

from __future__ import annotations

import pytest

from storage import Store, digests
from storage.verify import check
from tests.documents import index_manifest
from tests.storage.images import Image, edit_tip, git, push_image


def blob_path(data: bytes) -> str:
    digest = digests.of(data)
    return f"blobs/{digest.algorithm}/{digest.hex}"


@pytest.fixture
def app(store: Store) -> Image:
    """library/app:v1, and beside it `other` and a multi-platform index in `multi`."""
    push_image(store, "other", "v1")
    children = [push_image(store, "multi", None).manifest for _ in range(2)]
    store.put_manifest("multi", "v1", index_manifest(children))
    return push_image(store, "library/app", "v1")


def test_a_registry_hroot_wrote_has_no_problems(store: Store, app: Image) -> None:
    assert check(store.path) == []


def test_a_manifest_index_json_lists_but_the_layout_lacks(store: Store, app: Image) -> None:
    edit_tip(store, "library/app", {blob_path(app.manifest): None})
    assert check(store.path) == [
        f"hroot/library+app: index.json lists {app.digest}; {blob_path(app.manifest)} is missing"
    ]


def test_a_layer_a_manifest_needs_that_is_missing(store: Store, app: Image) -> None:
    edit_tip(store, "library/app", {blob_path(app.layers[1]): None})
    layer = digests.of(app.layers[1])
    assert check(store.path) == [
        f"hroot/library+app: manifest {app.digest} needs {layer}, which is missing"
    ]


def test_a_child_of_an_index_that_is_missing(store: Store, app: Image) -> None:
    child = push_image(store, "multi", None)
    store.put_manifest("multi", "v2", index_manifest([child.manifest]))
    edit_tip(store, "multi", {blob_path(child.manifest): None})
    problems = check(store.path)
    assert problems[0].startswith("hroot/multi: manifest ")
    assert f"needs {child.digest}, which is missing" in problems[0]
    assert len(problems) == 2  # and index.json lists it, untagged, as hroot always does
    assert f"index.json lists {child.digest}" in problems[1]


def test_a_blob_whose_bytes_do_not_match_its_name_on_every_branch_holding_it(
    store: Store, app: Image
) -> None:
    store.mount_blob("other", str(digests.of(app.layers[0])), "library/app")
    edit_tip(store, "other", {blob_path(app.layers[0]): b"not the layer"})
    edit_tip(store, "library/app", {blob_path(app.layers[0]): b"not the layer"})
    found = digests.of(b"not the layer")
    assert check(store.path) == [
        f"{branch}: {blob_path(app.layers[0])}: content hashes to {found}"
        for branch in ("hroot/library+app", "hroot/other")
    ]


def test_a_broken_index_json(store: Store, app: Image) -> None:
    edit_tip(store, "library/app", {"index.json": b'{"manifests": ['})
    [problem] = check(store.path)
    assert problem.startswith("hroot/library+app: index.json: not valid JSON")


def test_a_manifest_of_another_size_than_index_json_says(store: Store, app: Image) -> None:
    index = git(store, "show", "hroot/library+app:index.json")
    edit_tip(
        store,
        "library/app",
        {"index.json": index.replace('"size":', '"size":1').encode()},
    )
    size = len(app.manifest)
    assert check(store.path) == [
        f"hroot/library+app: manifest {app.digest} has {size} bytes, index.json says 1{size}"
    ]


def test_a_branch_name_that_names_no_repository(store: Store, app: Image) -> None:
    tip = git(store, "rev-parse", "hroot/other").strip()
    git(store, "update-ref", "refs/heads/hroot/Other", tip)
    assert check(store.path) == [
        "hroot/Other: the branch name is no repository name (docs/format.md §2)"
    ]


def test_only_the_commits_asked_about_are_checked(store: Store, app: Image) -> None:
    clean = git(store, "rev-parse", "hroot/library+app").strip()
    damaged = edit_tip(store, "library/app", {"oci-layout": None})
    ref = "refs/heads/hroot/library+app"
    assert check(store.path, {ref: clean}) == []
    assert check(store.path, {ref: damaged}) == ["hroot/library+app: oci-layout is missing"]
