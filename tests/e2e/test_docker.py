"""docker (CLI + a dockerd of its own) against hroot: push, pull, run, build, manifest lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, Pushed, cat, import_image
from .oci import check_layout, read_blob, tagged

pytestmark = pytest.mark.e2e


def test_push_rmi_pull_run(docker: Cli, hroot: Hroot, busybox: Path, tmp_path: Path) -> None:
    image = import_image(docker, busybox, tmp_path, hroot.ref("library/hello", "1"))
    commits = hroot.assert_pushed("library/hello", image.digest)
    assert len(commits) == 1, commits
    assert hroot.git("branch", "--list", "hroot/library+hello").strip() == "hroot/library+hello"

    docker("rmi", image.ref)
    pulled = docker("pull", image.ref)
    assert "Pull complete" in pulled and image.digest in pulled, pulled
    assert cat(docker, image.ref, "/etc/hello") == image.token

    by_digest = hroot.ref("library/hello", image.digest)
    assert image.digest in docker("pull", by_digest)
    assert cat(docker, by_digest, "/etc/hello") == image.token

    layout = hroot.export("library/hello", tmp_path / "layout")
    assert check_layout(layout, "1") == image.digest


def test_build_multi_layer(docker: Cli, hroot: Hroot, built: Pushed, tmp_path: Path) -> None:
    hroot.assert_pushed("built", built.digest)
    layout = hroot.export("built", tmp_path / "layout")
    assert check_layout(layout, "1") == built.digest
    manifest = json.loads(read_blob(layout, tagged(layout, "1")))
    assert len(manifest["layers"]) == 3, manifest

    docker("rmi", built.ref)
    assert built.digest in docker("pull", built.ref)
    assert cat(docker, built.ref, "/etc/built", "/etc/added") == f"built\n{built.token}"


def test_build_records_lineage(hroot: Hroot, base: Pushed, built: Pushed) -> None:
    """DESIGN §2.3: the commit of an image built FROM another has the base's commit as parent."""
    (base_commit,) = [c for c in hroot.commits("base") if base.digest in c.digests]
    (built_commit,) = [c for c in hroot.commits("built") if built.digest in c.digests]
    assert base_commit.sha in built_commit.parents, (built_commit, base_commit)


def test_manifest_list(
    docker: Cli, hroot: Hroot, base: Pushed, built: Pushed, tmp_path: Path
) -> None:
    listed = hroot.ref("multi", "list")
    docker("manifest", "create", "--insecure", listed, base.ref, built.ref)
    docker("manifest", "annotate", "--arch", "arm64", listed, built.ref)
    out = docker("manifest", "push", "--insecure", "--purge", listed)
    digest = re.findall(r"sha256:[0-9a-f]{64}", out)[-1]
    # The list and, pushed by digest before it, both images it lists.
    hroot.assert_pushed("multi", digest, base.digest, built.digest)

    remote = json.loads(docker("manifest", "inspect", "--insecure", listed))
    entries = {(m["digest"], m["platform"]["architecture"]) for m in remote["manifests"]}
    assert entries == {(base.digest, "amd64"), (built.digest, "arm64")}

    # This machine is amd64: pulling the list gives the base image.
    docker("pull", listed)
    assert cat(docker, listed, "/etc/hello") == base.token
    listing = docker("run", "--rm", "--network", "none", listed, "/bin/busybox", "ls", "/etc")
    assert "hello" in listing.split() and "built" not in listing.split(), listing

    layout = hroot.export("multi", tmp_path / "layout")
    assert check_layout(layout, "list") == digest
