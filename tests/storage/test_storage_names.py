"""Repository names and tags: what is valid, and how names map to branches."""

from __future__ import annotations

import pytest

from storage import names
from storage.errors import NameInvalid, TagInvalid


@pytest.mark.parametrize(
    ("name", "branch"),
    [
        ("img", b"refs/heads/hroot/img"),
        ("library/alpine", b"refs/heads/hroot/library+alpine"),
        ("a/b/c", b"refs/heads/hroot/a+b+c"),
        ("my-app.lock", b"refs/heads/hroot/my-app.lock+"),
        ("a__b/c.d-e", b"refs/heads/hroot/a__b+c.d-e"),
    ],
)
def test_names_map_to_branches_and_back(name: str, branch: bytes) -> None:
    assert names.branch_ref(name) == branch
    assert names.decode(branch.removeprefix(names.BRANCH_PREFIX)) == name
    assert names.staging_ref(name) == names.STAGING_PREFIX + branch.removeprefix(
        names.BRANCH_PREFIX
    )


@pytest.mark.parametrize(
    "name",
    ["", "UPPER", "a//b", "/a", "a/", "a..b", "-a", "a-", "a+b", "a b", "a/../b", "x" * 250],
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(NameInvalid):
        names.branch_ref(name)


def test_longest_name_still_fits_a_lock_file() -> None:
    name = "x" * (names.MAX_NAME_LENGTH - len(".lock")) + ".lock"
    assert len(names.encode(name) + b".lock") <= 255


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A-b_c.d", "x" * 128])
def test_valid_tags(tag: str) -> None:
    assert names.check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a/b", "a:b", "x" * 129, "a b"])
def test_invalid_tags_are_refused(tag: str) -> None:
    with pytest.raises(TagInvalid):
        names.check_tag(tag)
