"""`hroot sync` as a real process between real repositories: what it prints, what it moves,
what it transfers, and how it fails."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from storage import Store
from storage.repository import FORMAT
from tests.cli.commands import hroot
from tests.storage.images import push_image, put


def git(data: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(data), *args], check=True, capture_output=True, text=True
    ).stdout


def branches(data: Path) -> dict[str, str]:
    """branch -> commit, as git lists them."""
    listed = git(data, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
    return dict(line.split() for line in listed.splitlines())  # type: ignore[misc]


def objects(data: Path) -> int:
    """How many objects the repository holds, loose and packed."""
    counts = dict(line.split(": ") for line in git(data, "count-objects", "-v").splitlines())
    return int(counts["count"]) + int(counts["in-pack"])


def free_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def push(data: Path, repo: str) -> None:
    store = Store.open(data)
    try:
        push_image(store, repo, layer_size=5000)
    finally:
        store.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A registry holding app:v1 and lib/x:v1."""
    data = tmp_path / "source.git"
    push(data, "app")
    push(data, "lib/x")
    return data


def test_sync_creates_the_registry_and_prints_each_change(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.git"
    first = hroot("sync", source, "--data", target)
    assert first.returncode == 0, first.stderr
    tips = branches(source)
    assert branches(target) == tips
    assert first.stdout == (
        f"hroot/app: new {tips['hroot/app'][:7]}\nhroot/lib+x: new {tips['hroot/lib+x'][:7]}\n"
    )
    assert git(target, "config", "hroot.format") == f"{FORMAT}\n"

    again = hroot("sync", source, "--data", target)
    assert (again.returncode, again.stdout) == (0, f"up to date with {source}\n")

    push(source, "lib/x")
    git(target, "branch", "-m", "hroot/app", "hroot/here-only")
    moved = hroot("sync", source, "--data", target)
    assert moved.returncode == 0, moved.stderr
    now = branches(source)
    assert moved.stdout == (
        f"hroot/app: new {now['hroot/app'][:7]}\n"
        f"hroot/lib+x: {tips['hroot/lib+x'][:7]} -> {now['hroot/lib+x'][:7]}\n"
    )
    assert branches(target) == now | {"hroot/here-only": tips["hroot/app"]}  # no --prune


def test_sync_json_and_prune(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.git"
    push(target, "only/here")
    mine = branches(target)["hroot/only+here"]
    done = hroot("sync", source, "--data", target, "--prune", "--json")
    assert done.returncode == 0, done.stderr
    tips = branches(source)
    assert json.loads(done.stdout) == {
        "source": str(source),
        "changed": [
            {"branch": "hroot/app", "repository": "app", "old": None, "new": tips["hroot/app"]},
            {
                "branch": "hroot/lib+x",
                "repository": "lib/x",
                "old": None,
                "new": tips["hroot/lib+x"],
            },
            {"branch": "hroot/only+here", "repository": "only/here", "old": mine, "new": None},
        ],
    }
    assert branches(target) == tips


def test_sync_adds_only_the_objects_missing(source: Path, tmp_path: Path) -> None:
    """What the branches reach and the target lacks, no more: not what it has already,
    not blobs the source holds for uploads in progress (staged, not on a branch)."""
    target = tmp_path / "target.git"
    assert hroot("sync", source, "--data", target).returncode == 0
    before = objects(target)
    old = branches(source)["hroot/app"]
    push(source, "app")
    store = Store.open(source)
    try:
        put(store, "app", b"uploaded, no manifest takes it in yet")
    finally:
        store.close()
    assert git(source, "for-each-ref", "refs/hroot/staging/")
    new = branches(source)["hroot/app"]
    missing = git(source, "rev-list", "--objects", new, "--not", *branches(target).values())
    assert hroot("sync", source, "--data", target).returncode == 0
    assert branches(target)["hroot/app"] == new != old
    assert objects(target) - before == len(missing.splitlines())


@pytest.mark.parametrize(
    "where",
    ["missing", "not-a-repository", "http://127.0.0.1:{port}/git/", "ftp://example/x"],
)
def test_sync_from_a_bad_source_says_so_in_one_line(where: str, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "not-a-repository").mkdir()
    source = where.format(port=port) if "://" in where else str(tmp_path / where)
    done = hroot("sync", source, "--data", tmp_path / "target.git")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("hroot: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--follow", "{tmp}/missing"], "missing is neither a folder"),
        (["--follow", "{tmp}/target.git"], "is this registry itself"),
        (["--follow", "{tmp}", "--follow-interval", "0"], "follow_interval must be a positive"),
    ],
)
def test_serve_refuses_a_follow_it_cannot_use_before_creating_anything(
    flags: list[str], said: str, tmp_path: Path
) -> None:
    """The source checks `hroot sync` makes, made by `hroot serve --follow` before it binds
    its port or creates its repository."""
    port = free_port()
    target = tmp_path / "target.git"
    target.mkdir()  # empty: what serve would create a registry in
    argv = [flag.format(tmp=tmp_path) for flag in flags]
    done = hroot("serve", "--listen", f"127.0.0.1:{port}", "--data", target, *argv)
    assert done.returncode == 2
    assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(target.iterdir()) == []
