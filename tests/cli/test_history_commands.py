"""`hroot log/show/diff/ls` as real processes on a real repository, with and beside a server."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storage import Store
from tests.cli.commands import ROOT, hroot
from tests.documents import OCI_MANIFEST, digest_of, image_manifest
from tests.storage.images import image_config, push_layers, tar_of


@dataclass
class Registry:
    data: Path
    base: str  # base:1, one plain tar layer
    old: str  # app:old, built FROM base:1, then app:v1 moved away from it
    new: str  # app:v1, built FROM base:1 too
    base_layer: bytes
    old_layer: bytes  # gzip
    new_tar: bytes  # gzipped as new's second layer

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.data), *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    data = tmp_path / "hroot.git"
    store = Store.open(data)
    try:
        base_layer = tar_of({"bin/sh": os.urandom(4000)})
        old_layer = gzip.compress(tar_of({"app": b"old " * 1000}))
        new_tar = tar_of({"app": b"new " * 3000})
        base = push_layers(store, "base", "1", image_config(), [base_layer])
        old = push_layers(
            store, "app", "v1", image_config(Cmd=["run"], Env=["A=1"]), [base_layer, old_layer]
        )
        new = push_layers(
            store,
            "app",
            "v1",
            image_config(Cmd=["run", "--fast"], Env=["A=1", "B=2"], Labels={"team": "core"}),
            [base_layer, gzip.compress(new_tar)],
        )
        store.put_manifest("app", "old", store.get_manifest("app", old).body)
    finally:
        store.close()
    return Registry(data, base, old, new, base_layer, old_layer, new_tar)


def succeed(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = hroot(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def as_json(*args: str | Path) -> Any:
    return json.loads(succeed(*args, "--json"))


def short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def test_log_prints_tag_moves_bases_and_commits(registry: Registry) -> None:
    out = succeed("log", "app", "--data", registry.data)

    commits = registry.git("log", "--first-parent", "--format=%H %ct", "hroot/app").split("\n")
    for line in filter(None, commits):
        commit, seconds = line.split()
        moment = datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert f"{commit[:12]}  {moment}  " in out
    assert f"tag old added: {short(registry.old)}" in out
    assert f"tag v1 moved: {short(registry.old)} -> {short(registry.new)}" in out
    assert f"tag v1 added: {short(registry.old)}" in out
    assert f"built from base@{registry.base}" in out
    assert f"image {registry.new}  linux/amd64  " in out
    assert out.index("tag old added") < out.index("tag v1 moved") < out.index("tag v1 added")

    entries = as_json("log", "app", "-n", "2", "--data", registry.data)
    newest = registry.git("log", "--first-parent", "-2", "--format=%H %cI", "hroot/app").split()
    assert [(e["commit"], e["time"]) for e in entries] == [
        (newest[0], newest[1]),
        (newest[2], newest[3]),
    ]
    tagged, moved = entries
    assert tagged["tags"] == [{"tag": "old", "old": None, "new": registry.old}]
    assert moved["tags"] == [{"tag": "v1", "old": registry.old, "new": registry.new}]
    assert moved["bases"] == [{"repository": "base", "digest": registry.base, "platform": None}]
    assert moved["image"]["digest"] == registry.new and moved["action"] == "push"


def test_show_prints_config_layers_and_sharing(registry: Registry) -> None:
    env = {"HROOT_DATA": str(registry.data)}
    out = succeed("show", "app:v1", env=env)

    assert out.startswith("app:v1\n")
    assert f"digest         {registry.new}\n" in out
    assert '  cmd          ["run", "--fast"]\n' in out
    assert "  env          A=1\n               B=2\n" in out
    assert "  labels       team=core\n" in out
    assert f"built from     base@{registry.base}\n" in out
    base_line = next(line for line in out.splitlines() if digest_of(registry.base_layer) in line)
    assert base_line.split()[0] == "1" and base_line.endswith("  base")
    new_line = out.splitlines()[-1]
    assert new_line.split()[0] == "2" and new_line.endswith("  -")
    assert len(registry.new_tar) == 20 * 1024 and "  20.0 KiB  " in new_line  # gunzipped

    image = json.loads(succeed("show", f"app@{registry.new}", "--json", env=env))
    assert image["digest"] == registry.new and image["tags"] == ["v1"]
    assert [(layer["uncompressed_size"], layer["shared_with"]) for layer in image["layers"]] == [
        (len(registry.base_layer), ["base"]),
        (len(registry.new_tar), []),
    ]
    assert image["config"]["env"] == ["A=1", "B=2"]
    assert image["bases"] == [{"repository": "base", "digest": registry.base, "platform": None}]
    assert image["pushed"]["commit"] in registry.git("log", "--format=%H", "hroot/app")


def test_diff_prints_layers_config_and_size(registry: Registry) -> None:
    out = succeed("diff", "app:old", "app:v1", "--data", registry.data)

    lines = out.splitlines()
    assert f"old  app:old  {registry.old}" in lines
    assert any(line.startswith(f"  kept     {digest_of(registry.base_layer)}") for line in lines)
    assert any(line.startswith(f"  removed  {digest_of(registry.old_layer)}") for line in lines)
    assert sum(line.startswith("  added    sha256:") for line in lines) == 1
    assert '  cmd: ["run"] -> ["run", "--fast"]' in lines
    assert "  env added: B=2" in lines and "  label added: team=core" in lines
    assert out.index("\nlayers\n") < out.index("\nconfig\n") < out.index("\nsize\n")

    found = as_json("diff", "app:old", "base:1", "--data", registry.data)
    assert set(found) == {"old", "new", "layers", "config", "size", "files"}
    assert found["files"] is None  # neither image has a filesystem view
    assert found["layers"]["kept"] == [
        {"digest": digest_of(registry.base_layer), "size": len(registry.base_layer)}
    ]
    assert found["layers"]["removed"] == [
        {"digest": digest_of(registry.old_layer), "size": len(registry.old_layer)}
    ]
    assert found["layers"]["added"] == []
    assert found["config"]["changed"]["cmd"] == {"old": ["run"], "new": None}
    size = found["size"]
    assert size["change"] == size["new"] - size["old"] and size["change"] < 0


def test_ls_prints_repositories_with_unique_and_shared_bytes(registry: Registry) -> None:
    out = succeed("ls", "--data", registry.data)

    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert out.splitlines()[0].split() == [
        "REPOSITORY",
        "TAGS",
        "MANIFESTS",
        "SIZE",
        "UNIQUE",
        "SHARED",
    ]
    assert rows["app"][1:3] == ["2", "2"] and rows["base"][1:3] == ["1", "1"]
    assert "2 repositories" in out

    usage = as_json("ls", "--data", registry.data)
    by_name = {repo["repository"]: repo for repo in usage["repositories"]}
    assert by_name["base"]["shared"] == by_name["app"]["shared"] == len(registry.base_layer)
    for repo in ("app", "base"):
        listing = registry.git("ls-tree", "-r", "-l", f"hroot/{repo}", "blobs")
        sizes = [int(line.split()[3]) for line in listing.splitlines()]
        assert by_name[repo]["size"] == sum(sizes) and by_name[repo]["blobs"] == len(sizes)
        assert by_name[repo]["unique"] == by_name[repo]["size"] - len(registry.base_layer)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["log", "nothing"], "repository name not known to registry (nothing)"),
        (["log", "Not-Valid"], "invalid repository name (Not-Valid)"),
        (["show", "app"], "manifest unknown to registry (app:latest)"),  # NAME is NAME:latest
        (["show", "app:v9"], "manifest unknown to registry (app:v9)"),
        (["show", "app@sha256:12"], "invalid digest (sha256:12)"),
        (["show", "app:bad~tag"], "invalid tag (bad~tag)"),
        (["diff", "app:v1", "other:1"], "repository name not known to registry (other)"),
        (["show", "app:v1", "--platform", "linux/s390x"], "has no image for linux/s390x"),
    ],
)
def test_a_bad_name_or_reference_is_one_line_and_status_1(
    registry: Registry, args: list[str], says: str
) -> None:
    done = hroot(*args, "--data", registry.data)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("hroot: ") and done.stderr.count("\n") == 1
    assert says in done.stderr


def test_no_registry_at_the_path_is_one_line(tmp_path: Path) -> None:
    done = hroot("ls", "--data", tmp_path / "missing.git")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "no registry here" in done.stderr
    assert not (tmp_path / "missing.git").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, method: str, body: bytes = b"", content_type: str = "") -> int:
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_the_commands_work_while_a_server_runs_on_the_repository(registry: Registry) -> None:
    """The server pushes an image; every command, run beside it, sees that push."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data",
            str(registry.data),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v2"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert _request(f"{url}/", "GET") == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        config = json.dumps(image_config(User="served")).encode()
        layer = tar_of({"served": b"by the server"})
        for blob in (config, layer):
            assert (
                _request(f"{url}/app/blobs/uploads/?digest={digest_of(blob)}", "POST", blob) == 201
            )
        manifest = image_manifest(config, [registry.base_layer, layer])
        assert _request(f"{url}/app/manifests/v2", "PUT", manifest, OCI_MANIFEST) == 201
        pushed = digest_of(manifest)

        assert f"tag v2 added: {short(pushed)}" in succeed(
            "log", "app", "-n", "1", "--data", registry.data
        )
        shown = as_json("show", "app:v2", "--data", registry.data)
        assert shown["digest"] == pushed and shown["config"]["user"] == "served"
        changes = as_json("diff", "app:v1", "app:v2", "--data", registry.data)
        assert changes["config"]["changed"]["user"] == {"old": None, "new": "served"}
        usage = as_json("ls", "--data", registry.data)
        assert [r["tags"] for r in usage["repositories"] if r["repository"] == "app"] == [3]
        assert _request(f"{url}/", "GET") == 200  # and the server is still serving
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        finally:
            server.kill()
    assert server.returncode == 0
