"""A registry moves as a git repository: a `git clone --mirror` of it is served as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, Pushed, cat, serving
from .tools import run

pytestmark = pytest.mark.e2e


def inspect_digest(skopeo: Cli, server: Hroot, name: str, tag: str) -> str:
    raw = skopeo("inspect", "--tls-verify=false", f"docker://{server.ref(name, tag)}")
    return str(json.loads(raw)["Digest"])


def test_a_mirror_clone_is_served_with_the_same_digests(
    hroot: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror.git"
    run("git", "clone", "--quiet", "--mirror", hroot.data, mirror)
    assert "hroot.format" not in run("git", "--git-dir", mirror, "config", "--list").stdout.decode()

    with serving(mirror, tmp_path / "mirror.log") as second:
        assert "adopted" in second.new_log()
        for name, image in (("base", base), ("built", built)):
            assert inspect_digest(skopeo, second, name, "1") == image.digest
            assert inspect_digest(skopeo, hroot, name, "1") == image.digest

        from_mirror = second.ref("built", "1")
        docker("pull", from_mirror)
        assert cat(docker, from_mirror, "/etc/added") == built.token
        docker("rmi", from_mirror)
        second.fsck()
