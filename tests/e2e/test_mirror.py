"""A registry moves as a git repository: a `git clone --mirror` of it is served as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Cli, Hroot, Pushed, assert_serves, serving
from .tools import run

pytestmark = pytest.mark.e2e


def test_a_mirror_clone_is_served_with_the_same_digests(
    hroot: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror.git"
    run("git", "clone", "--quiet", "--mirror", hroot.data, mirror)
    assert "hroot.format" not in run("git", "--git-dir", mirror, "config", "--list").stdout.decode()

    with serving(mirror, tmp_path / "mirror.log") as second:
        assert "adopted" in second.new_log()
        assert_serves(second, base, built, docker, skopeo)
        second.fsck()
