"""`hroot fsck` and `hroot rm` as real processes, beside a real `hroot serve` on the same
repository: what they print, for people and as JSON, their exit status, and what the
server answers for a removed repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Store, digests, refs
from tests.cli.test_archive_commands import ROOT, git, hroot
from tests.cli.test_sync_command import free_port
from tests.storage.images import Image, edit_tip, push_image


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def data(tmp_path: Path) -> Iterator[tuple[Path, Image]]:
    """A registry holding app:v1 and lib/x:v1, with `hroot serve` running on it."""
    path = tmp_path / "hroot.git"
    store = Store.open(path)
    app = push_image(store, "app")
    push_image(store, "lib/x")
    store.close()
    yield path, app


@pytest.fixture
def server(data: tuple[Path, Image]) -> Iterator[str]:
    port = free_port()
    serve = ["serve", "--listen", f"127.0.0.1:{port}", "--data", str(data[0])]
    process = subprocess.Popen(
        [sys.executable, "-m", "registry", *serve],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v2"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert get(f"{url}/")[0] == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_rm_beside_a_server_then_the_repository_is_unknown(
    data: tuple[Path, Image], server: str
) -> None:
    path, _ = data
    tip = git(path, "rev-parse", "hroot/app").strip()
    assert get(f"{server}/app/tags/list")[0] == 200

    done = hroot("rm", "app", "--data", path)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode() == f"removed app (was at {tip[:12]})\n"

    status, body = get(f"{server}/app/tags/list")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
    assert get(f"{server}/lib/x/tags/list")[0] == 200
    assert git(path, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/hroot/lib+x"]

    again = hroot("rm", "app", "--data", path)
    assert (again.returncode, again.stdout) == (1, b"")
    assert again.stderr == b"hroot: repository name not known to registry (app)\n"

    as_json = hroot("rm", "lib/x", "--data", path, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["repository"] == "lib/x"
    assert json.loads(as_json.stdout)["uploads"] == 0
    assert "Its bytes stay" in hroot("rm", "--help").stdout.decode()


def test_fsck_clean_then_damaged_then_repaired_beside_a_server(
    data: tuple[Path, Image], server: str
) -> None:
    path, app = data
    clean = hroot("fsck", "--data", path)
    assert (clean.returncode, clean.stderr) == (0, b"")
    assert clean.stdout.decode().startswith("checked 2 repositories, 8 blobs (")
    assert clean.stdout.decode().endswith("): no problems\n")

    layer = digests.of(app.layers[0])
    store = Store.open(path)
    edit_tip(store, "app", {f"blobs/sha256/{layer.hex}": b"swapped"})
    store.close()
    lock = path / "refs" / "heads" / "hroot" / "lib+x.lock"
    lock.write_text("")
    os.utime(lock, (0, time.time() - refs.STALE_LOCK_SECONDS - 60))

    damaged = hroot("fsck", "--data", path)
    assert damaged.returncode == 1
    lines = damaged.stdout.decode().splitlines()
    assert lines[:4] == [
        "app:",
        f"  blobs/sha256/{layer.hex}: content hashes to {digests.of(b'swapped')}",
        "(registry):",
        "  stale lock file refs/heads/hroot/lib+x.lock",
    ]
    assert lines[4].startswith("checked 2 repositories, ") and lines[4].endswith(": 2 problem(s)")

    repaired = hroot("fsck", "--repair", "--data", path, "--json")
    assert repaired.returncode == 1  # the swapped blob is user data: never repaired
    report = json.loads(repaired.stdout)
    assert report["removed"] == ["removed stale lock refs/heads/hroot/lib+x.lock"]
    assert report["problems"] == [
        {
            "repository": "app",
            "problem": f"blobs/sha256/{layer.hex}: content hashes to {digests.of(b'swapped')}",
        }
    ]
    assert not lock.exists()
    assert get(f"{server}/app/tags/list")[0] == 200
