"""Uncompressed layers from real clients stored as files (docs/format.md §10): skopeo
pushing an OCI layout whose layer is a plain tar, and `hroot import` of a `docker save`;
pulled back, exported by `git archive`, byte for byte."""

from __future__ import annotations

import json
import re
import secrets
import tarfile
from pathlib import Path

import pytest

from tests import tars
from tests.documents import digest_of

from .conftest import Cli, Hroot, Pushed, cat, docker_save
from .oci import check_layout

pytestmark = pytest.mark.e2e

TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"
SAME = "--preserve-digests"


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def tar_layout(layout: Path, tag: str, layer: bytes) -> str:
    """An OCI layout whose image has `layer` as its one uncompressed layer; its digest."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}
            | write_blob(layout, config),
            "layers": [{"mediaType": TAR_LAYER} | write_blob(layout, layer)],
        }
    ).encode()
    described = write_blob(layout, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json"}
            | described
            | {"annotations": {"org.opencontainers.image.ref.name": tag}}
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return str(described["digest"])


def stored_as_files(hroot: Hroot, name: str) -> list[str]:
    listed = hroot.git("ls-tree", "--name-only", f"{hroot.branch(name)}:.hroot/layers/sha256")
    return [f"sha256:{hex_}" for hex_ in listed.split()]


def test_skopeo_pushes_a_plain_tar_layer_that_comes_back_byte_for_byte(
    skopeo: Cli, hroot: Hroot, tmp_path: Path
) -> None:
    layer = tars.python_tar(tarfile.PAX_FORMAT)
    layout = tmp_path / "layout"
    digest = tar_layout(layout, "v1", layer)
    ref = hroot.ref("files/app", "v1")
    skopeo("copy", SAME, "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}")
    hroot.assert_pushed("files/app", digest)
    assert stored_as_files(hroot, "files/app") == [digest_of(layer)]

    back = tmp_path / "back"
    skopeo("copy", SAME, "--src-tls-verify=false", f"docker://{ref}", f"oci:{back}:v1")
    assert check_layout(back, "v1") == digest
    from_git = hroot.export("files/app", tmp_path / "git")  # git archive, smudged
    assert check_layout(from_git, "v1") == digest
    assert json.loads(skopeo("inspect", f"oci:{from_git}:v1"))["Digest"] == digest
    hroot.fsck()


def test_an_imported_docker_save_is_stored_as_files_and_runs(
    docker: Cli, hroot: Hroot, base: Pushed, tmp_path: Path
) -> None:
    token = secrets.token_hex(8)
    saved = "registry.example.com/files/saved:1"
    files = {"token": token.encode(), "big": secrets.token_bytes(tars.BIG)}
    archive = docker_save(docker, base, tmp_path, saved, files)

    printed = hroot.cli("import", archive)
    found = re.fullmatch(r"imported files/saved:1 (sha256:[0-9a-f]{64})\n", printed)
    assert found, printed
    assert stored_as_files(hroot, "files/saved")  # the layer with /etc/big at least

    docker("rmi", saved)
    ref = hroot.ref("files/saved", "1")
    assert f"Digest: {found.group(1)}" in docker("pull", ref)
    assert cat(docker, ref, "/etc/token", "/etc/hello") == f"{token}{base.token}"
    docker("rmi", ref)
    hroot.fsck()
