"""`hroot import` and `hroot export` as real processes on real repositories.

What they print (for people, for --json, for errors), what they write (checked with the
git command line and tarfile), and the progress bar: drawn on a terminal, absent in a pipe.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import termios
from pathlib import Path

import pytest

from storage import Store
from storage.repository import FORMAT
from tests.storage.images import Image, push_image

ROOT = Path(__file__).resolve().parents[2]


def hroot(*args: str | Path, stderr_tty: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m registry ARGS`; with stderr_tty its stderr is a 100-column terminal."""
    command = [sys.executable, "-m", "registry", *map(str, args)]
    if not stderr_tty:
        return subprocess.run(command, capture_output=True, cwd=ROOT)
    terminal, stderr = os.openpty()
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT) as proc:
        os.close(stderr)
        drawn = b""
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            drawn += chunk
        stdout = proc.stdout.read() if proc.stdout else b""
    os.close(terminal)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, drawn)


def git(data: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(data), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, Image]:
    """A registry holding app:v1 (two 2 MB layers)."""
    data = tmp_path / "source.git"
    store = Store.open(data)
    try:
        return data, push_image(store, "app", layer_size=2_000_000)
    finally:
        store.close()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    data = tmp_path / "target.git"
    Store.open(data).close()
    return data


def test_export_then_import_prints_and_commits(
    source: tuple[Path, Image], target: Path, tmp_path: Path
) -> None:
    data, image = source
    archive = tmp_path / "app.tar"
    exported = hroot("export", "app:v1", "-o", archive, "--data", data)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.decode() == f"exported app:v1 {image.digest} to {archive}\n"
    assert exported.stderr == b""  # no progress bar in a pipe
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []

    imported = hroot("import", archive, "--name", "copy:7", "--data", target)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.decode() == f"imported copy:7 {image.digest}\n"
    assert imported.stderr == b""
    assert git(target, "log", "--format=%s", "hroot/copy") == f"push copy:7 {image.digest}\n"

    again = hroot("import", archive, "--data", target, "--json")
    assert json.loads(again.stdout) == [
        {
            "name": "app",
            "tag": "v1",
            "digest": image.digest,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
        }
    ]


def test_import_into_a_new_path_creates_the_registry(
    source: tuple[Path, Image], tmp_path: Path
) -> None:
    data, image = source
    archive = tmp_path / "app.tar"
    assert hroot("export", "app:v1", "-o", archive, "--data", data).returncode == 0
    fresh = tmp_path / "fresh.git"
    imported = hroot("import", archive, "--data", fresh)
    assert imported.returncode == 0, imported.stderr
    assert git(fresh, "config", "hroot.format").strip() == str(FORMAT)
    assert git(fresh, "log", "--format=%s", "hroot/app") == f"push app:v1 {image.digest}\n"


def test_export_to_stdout_is_the_archive(source: tuple[Path, Image]) -> None:
    data, image = source
    exported = hroot("export", "app:v1", "-o", "-", "--format", "docker-archive", "--data", data)
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
        (listed,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = [tar.extractfile(path).read() for path in listed["Layers"]]  # type: ignore[union-attr]
    assert listed["RepoTags"] == ["app:v1"]
    assert layers == image.layers


def test_progress_bar_on_a_terminal_only(source: tuple[Path, Image], tmp_path: Path) -> None:
    data, _ = source
    on_terminal = hroot(
        "export", "app:v1", "-o", tmp_path / "a.tar", "--data", data, stderr_tty=True
    )
    assert on_terminal.returncode == 0
    # the bar with its total (a percentage), drawn before the copy starts
    assert b"export:   0%|" in on_terminal.stderr, on_terminal.stderr
    assert on_terminal.stdout.startswith(b"exported app:v1 ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "{tmp}/missing.tar"], "hroot: {tmp}/missing.tar: no such file or folder\n"),
        (["import", "{tmp}/junk.tar"], "hroot: {tmp}/junk.tar: not a tar archive\n"),
        (["export", "app:v9", "-o", "{tmp}/x.tar"], "hroot: no image app:v9 in the registry\n"),
    ],
)
def test_errors_are_one_line(
    source: tuple[Path, Image], tmp_path: Path, args: list[str], message: str
) -> None:
    data, _ = source
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all\n" * 100)
    refs = git(data, "for-each-ref")
    failed = hroot(*[a.format(tmp=tmp_path) for a in args], "--data", data)
    assert (failed.returncode, failed.stdout) == (1, b"")
    assert failed.stderr.decode() == message.format(tmp=tmp_path)
    assert git(data, "for-each-ref") == refs
    assert not (tmp_path / "x.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
