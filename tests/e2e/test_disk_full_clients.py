"""A full disk as skopeo sees it: the registry on a 48 MiB tmpfs (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import Cli, ImageMaker, serving

pytestmark = pytest.mark.e2e


def test_skopeo_is_told_the_disk_is_full_and_pushes_once_there_is_room(
    disk: Path, tmp_path: Path, make_image: ImageMaker, skopeo: Cli
) -> None:
    layout = tmp_path / "images"
    make_image(layout, "big", {"/big": os.urandom(64 << 20)}, with_busybox=False)
    make_image(layout, "small", {"/small": b"small"}, with_busybox=False)
    config = tmp_path / "hroot.toml"
    config.write_text("min_free_bytes = 1048576\n")  # the default, 64 MiB, is more than the disk
    with serving(disk / "hroot.git", tmp_path / "server.log", "--config", str(config)) as server:
        code, said = skopeo.attempt(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:big",
            f"docker://{server.ref('app', 'big')}",
        )
        assert code != 0
        assert "no space left on the registry's disk" in said, said
        code, said = skopeo.attempt(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:small",
            f"docker://{server.ref('app', 'small')}",
        )
        assert code == 0, said  # the failed push left nothing behind that holds the space
        log = server.log.read_text()
    assert "disk full on" in log and "Traceback" not in log
    # refused before its body: the session stays (a client may try again), holding only
    # its spool's header
    spools = (disk / "hroot.git" / "hroot" / "uploads").rglob("data")
    assert [spool.stat().st_size < 1024 for spool in spools] == [True]
