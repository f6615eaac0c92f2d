"""Fixtures shared by the API and end-to-end tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, mounted for this test only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mount], capture_output=True
    )
    if done.returncode:
        why = f"cannot mount a tmpfs: {done.stderr.decode().strip()}"
        if os.environ.get("HROOT_REQUIRE_E2E") == "1":
            pytest.fail(f"{why} (and HROOT_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(why)
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount], check=True)
