"""podman (storage in a temp dir, vfs, no network) against hroot: push, pull, run, zstd."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, ImageMaker
from .oci import read_blob, tagged

pytestmark = pytest.mark.e2e

NO_TLS = "--tls-verify=false"


def cat(podman: Cli, ref: str, path: str) -> str:
    return podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        ref,
        "/bin/busybox",
        "cat",
        path,
    )


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_push_rmi_pull_run(
    podman: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path, compression: str
) -> None:
    token = secrets.token_hex(8)
    layout = tmp_path / "layout"
    make_image(layout, "v1", {"/etc/hello": token.encode()})
    name = f"podman/{compression}"
    ref = hroot.ref(name, "v1")
    image_id = podman("pull", "-q", f"oci:{layout}:v1").strip()
    podman("tag", image_id, ref)

    digest_file = tmp_path / "digest"
    podman("push", NO_TLS, "--compression-format", compression, "--digestfile", digest_file, ref)
    digest = digest_file.read_text().strip()
    hroot.assert_pushed(name, digest)
    layout = hroot.export(name, tmp_path / "git")
    manifest = json.loads(read_blob(layout, tagged(layout, "v1")))
    # The last layer, /etc/hello, is new to the registry: podman compressed it as asked.
    assert manifest["layers"][-1]["mediaType"].endswith(compression), manifest

    podman("rmi", "--all", "--force")
    assert podman("images", "-q") == ""
    podman("pull", NO_TLS, ref)
    assert cat(podman, ref, "/etc/hello") == token
    assert digest in podman("image", "inspect", "--format", "{{.Digest}}", ref)
