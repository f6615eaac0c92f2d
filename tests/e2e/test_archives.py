"""`hroot import` and `hroot export` with real clients: docker save/load, skopeo and OCI layouts.

The commands run as processes on the running server's own repository, beside it: what
they write the server serves at once, and what they read is what clients pushed.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, ImageMaker, Pushed, cat, docker_save
from .oci import add_index, check_layout

pytestmark = pytest.mark.e2e

TO_HROOT = "--dest-tls-verify=false"
SAME = "--preserve-digests"  # see test_skopeo.py: no swapping of a layer's compression


def tree(server: Hroot, name: str) -> str:
    return server.git("rev-parse", f"{server.branch(name)}^{{tree}}").strip()


def test_exported_docker_archive_loads_and_runs(
    docker: Cli, hroot: Hroot, built: Pushed, tmp_path: Path
) -> None:
    archive = tmp_path / "built.tar"
    printed = hroot.cli("export", "built:1", "-o", archive, "--format", "docker-archive")
    assert printed == f"exported built:1 {built.digest} to {archive}\n"

    # Without the image in the daemon, docker load must take every layer from the archive.
    image_id = docker("image", "inspect", "--format", "{{.Id}}", built.ref).strip()
    docker("rmi", "-f", image_id)
    assert docker.attempt("image", "inspect", image_id)[0] != 0
    assert "Loaded image: built:1" in docker("load", "-i", archive)
    try:
        assert docker("image", "inspect", "--format", "{{.Id}}", "built:1").strip() == image_id
        assert cat(docker, "built:1", "/etc/built", "/etc/added") == f"built\n{built.token}"
    finally:  # leave the daemon as the fixture made it: the image under its registry name
        docker("pull", built.ref)
        docker("rmi", "built:1")


def test_imported_docker_save_serves_pulls(
    docker: Cli, hroot: Hroot, base: Pushed, tmp_path: Path
) -> None:
    """A classic `docker save` (manifest.json, uncompressed layer tars) becomes a docker
    v2 schema 2 image that `docker pull` takes from the running server."""
    token = secrets.token_hex(8)
    saved = "registry.example.com/archives/saved:1"
    archive = docker_save(docker, base, tmp_path, saved, {"token": token.encode()})

    printed = hroot.cli("import", archive)
    found = re.fullmatch(r"imported archives/saved:1 (sha256:[0-9a-f]{64})\n", printed)
    assert found, printed
    digest = found.group(1)
    hroot.assert_pushed("archives/saved", digest)

    docker("rmi", saved)  # and with it the layer of /etc/token: the pull must bring it
    ref = hroot.ref("archives/saved", "1")
    assert f"Digest: {digest}" in docker("pull", ref)
    assert cat(docker, ref, "/etc/token", "/etc/hello") == f"{token}{base.token}"
    docker("rmi", ref)


def test_import_of_a_layout_is_a_skopeo_copy(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", {"/etc/hello": secrets.token_bytes(64)})
    by_skopeo = hroot.ref("archives/by-skopeo", "v1")
    skopeo("copy", SAME, TO_HROOT, f"oci:{layout}:v1", f"docker://{by_skopeo}")

    # The layout's ref.name is the bare tag: --name gives the repository, the tag stays.
    printed = hroot.cli("import", layout, "--name", "archives/by-import")
    assert printed == f"imported archives/by-import:v1 {digest}\n"
    hroot.assert_pushed("archives/by-import", digest)
    hroot.assert_pushed("archives/by-skopeo", digest)
    # Byte for byte the same layout as skopeo's push made: the same git tree.
    assert tree(hroot, "archives/by-import") == tree(hroot, "archives/by-skopeo")

    archive = tmp_path / "exported.tar"
    hroot.cli("export", "archives/by-import:v1", "-o", archive)
    inspected = json.loads(skopeo("inspect", f"oci-archive:{archive}"))
    assert inspected["Digest"] == digest


def test_exported_index_copies_back_with_skopeo(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    amd64 = make_image(layout, "amd64", {"/etc/arch": b"amd64"}, arch="amd64")
    arm64 = make_image(layout, "arm64", {"/etc/arch": b"arm64"}, arch="arm64")
    index = add_index(layout, "multi", ["amd64", "arm64"])
    # --name without a tag: each of the layout's images under its own tag
    printed = hroot.cli("import", layout, "--name", "archives/multi")
    assert sorted(printed.splitlines()) == [
        f"imported archives/multi:amd64 {amd64}",
        f"imported archives/multi:arm64 {arm64}",
        f"imported archives/multi:multi {index}",
    ]
    hroot.assert_pushed("archives/multi", index, amd64, arm64)

    archive = tmp_path / "multi.tar"
    hroot.cli("export", "archives/multi:multi", "-o", archive)
    back = tmp_path / "back"
    skopeo("copy", SAME, "--multi-arch", "all", f"oci-archive:{archive}", f"oci:{back}:multi")
    assert check_layout(back, "multi") == index
