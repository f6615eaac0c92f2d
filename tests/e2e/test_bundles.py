"""Across an air gap: a bundle of a running registry, applied to another running registry,
serves docker and skopeo the same images."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Cli, Hroot, Pushed, assert_serves, serving
from .tools import run

pytestmark = pytest.mark.e2e


def test_a_bundle_carries_images_to_a_registry_that_is_serving(
    hroot: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    bundle = tmp_path / "registry.bundle"
    hroot.cli("bundle", "create", bundle, "base", "built")
    run("git", "--git-dir", hroot.data, "bundle", "verify", bundle)  # fails the test if not ok

    with serving(tmp_path / "far.git", tmp_path / "far.log") as far:
        assert far.cli("bundle", "apply", bundle) == "added base\nadded built\n"
        assert_serves(far, base, built, docker, skopeo)
        far.fsck()
