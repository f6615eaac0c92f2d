"""Across an air gap: a bundle of a running registry, applied to another running registry,
serves docker and skopeo the same images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, Cli, Hroot, Pushed, cat, serving
from .test_mirror import inspect_digest
from .tools import output, run

pytestmark = pytest.mark.e2e


def hroot_cli(*args: str | Path) -> str:
    return output(sys.executable, "-m", "registry", *args, cwd=REPO_ROOT)


def test_a_bundle_carries_images_to_a_registry_that_is_serving(
    hroot: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    bundle = tmp_path / "registry.bundle"
    hroot_cli("bundle", "create", bundle, "base", "built", "--data", hroot.data)
    run("git", "--git-dir", hroot.data, "bundle", "verify", bundle)  # fails the test if not ok

    with serving(tmp_path / "far.git", tmp_path / "far.log") as far:
        assert hroot_cli("bundle", "apply", bundle, "--data", far.data) == (
            "added base\nadded built\n"
        )
        for name, image in (("base", base), ("built", built)):
            assert inspect_digest(skopeo, far, name, "1") == image.digest

        pulled = far.ref("built", "1")
        docker("pull", pulled)
        assert cat(docker, pulled, "/etc/added") == built.token
        docker("rmi", pulled)
        far.fsck()
