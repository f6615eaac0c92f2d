"""`hroot gc` as a real process: what it removes, what it prints, and --json; and the
stale ref locks a crash leaves, removed when `hroot serve` opens the repository."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from storage import Store
from tests.cli.commands import ROOT, hroot
from tests.storage.images import push_image

DAY = 24 * 3600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(data: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """`hroot serve` of `data` on a free port, logging to `log`."""
    listen = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "registry", "serve", "--listen", listen]
    with log.open("wb") as out:
        return subprocess.Popen([*command, "--data", str(data), *flags], cwd=ROOT, stderr=out)


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    for found in [path, *path.rglob("*")]:
        os.utime(found, (when, when))


def registry_with_leftovers(data: Path) -> str:
    """An abandoned 1 MiB upload two days old, and a repository deleted with git."""
    store = Store.open(data)
    try:
        push_image(store, "kept")
        upload = store.start_upload("kept")
        with store.open_upload("kept", upload) as writer:
            writer.write(os.urandom(1 << 20))
    finally:
        store.close()
    age(data / "hroot" / "uploads" / upload, 2 * DAY)
    return upload


def test_gc_removes_an_abandoned_upload_and_says_what_it_reclaimed(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    upload = registry_with_leftovers(data)
    done = hroot("gc", "--data", data)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("removed 1 upload spool(s) (1.0 MiB), 0 tmp file(s)")
    assert second.startswith("objects ") and ": reclaimed 10" in second  # 1,0xx KiB
    assert done.stderr == ""  # no bar in a pipe
    assert not (data / "hroot" / "uploads" / upload).exists()

    again = hroot("gc", "--data", data, "--json")
    report = json.loads(again.stdout)
    assert report["spools"] == 0 and report["reclaimed"] >= 0
    assert {"before", "after", "seconds", "locks", "staging_refs"} <= report.keys()


def test_gc_of_no_registry_and_a_bad_expiry_are_one_line(tmp_path: Path) -> None:
    missing = hroot("gc", "--data", tmp_path / "none.git")
    assert missing.returncode == 1 and missing.stderr.startswith("hroot: ")
    assert missing.stderr.count("\n") == 1
    negative = hroot("gc", "--expiry", "-1", "--data", tmp_path / "none.git")
    assert negative.returncode == 2 and "--expiry must not be negative" in negative.stderr


def test_serve_removes_the_stale_locks_a_crash_left(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    Store.open(data).close()
    lock = data / "refs" / "heads" / "hroot" / "app.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("0" * 40 + "\n")
    age(lock, 60)
    log = tmp_path / "serve.log"
    server = serve(data, log)
    said = "removed 1 stale ref lock file(s) left by a crash"
    try:
        wait_for(lambda: said in log.read_text())
        assert not lock.exists()
    finally:
        server.terminate()
        server.wait(20)
    assert said in log.read_text()


def test_serve_runs_gc_on_its_interval(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    upload = registry_with_leftovers(data)
    spool = data / "hroot" / "uploads" / upload
    log = tmp_path / "serve.log"
    server = serve(data, log, "--gc-interval", "0.5")
    try:
        wait_for(lambda: "hroot.gc gc removed" in log.read_text())
        assert not spool.exists()  # two days old: past the default expiry of a day
    finally:
        server.terminate()
        server.wait(20)
    text = log.read_text()
    assert "hroot.gc gc removed 1 upload spools" in text
    assert "Traceback" not in text


def test_gc_settings_must_be_seconds(tmp_path: Path) -> None:
    refused = hroot("serve", "--gc-interval", "-1", "--data", tmp_path / "new.git")
    assert refused.returncode == 2 and "gc_interval and gc_expiry" in refused.stderr
    assert not (tmp_path / "new.git").exists()


def _three_versions(data: Path) -> list[str]:
    """Three pushes of app:latest (two manifests left untagged) and one of web:latest."""
    store = Store.open(data)
    try:
        pushed = [push_image(store, "app", "latest").digest for _ in range(3)]
        push_image(store, "web", "latest")
    finally:
        store.close()
    return pushed


def _commits(data: Path, repo: str) -> int:
    counted = subprocess.run(
        ["git", "--git-dir", str(data), "rev-list", "--count", f"hroot/{repo}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(counted.stdout)


def test_retention_dry_run_says_what_would_go_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    first, second, _ = _three_versions(data)
    args = ("--drop-untagged", "0", "--keep-commits", "1", "--expiry", "0", "--data", data)

    planned = hroot("gc", *args, "--dry-run")

    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    assert lines[0] == "app: would drop 2 untagged manifest(s), 8 blob(s), 2 commit(s) of history"
    assert sorted(lines[1:3]) == sorted([f"  {first}", f"  {second}"])
    assert lines[-1].startswith("retention would drop 2 untagged manifests, 8 blobs, 2 commits")
    assert _commits(data, "app") == 3

    done = hroot("gc", *args, "--json")
    report = json.loads(done.stdout)
    assert sorted(report["dropped"]["manifests"]["app"]) == sorted([first, second])
    assert report["dropped"]["commits"] == {"app": 3}  # with the commit that dropped them
    assert _commits(data, "app") == 2  # that commit on the root that marks the cut
    assert _commits(data, "web") == 1


def test_retention_needs_sane_numbers(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    alone = hroot("gc", "--dry-run", "--data", data)
    assert alone.returncode == 2 and "give a retention option" in alone.stderr
    bad = hroot("gc", "--keep-days", "-1", "--data", data)
    assert bad.returncode == 2 and "not a number of days" in bad.stderr
    follower = hroot("serve", "--follow", str(tmp_path / "p.git"), "--gc-keep-commits", "5")
    assert follower.returncode == 2 and "set retention" in follower.stderr
    config = tmp_path / "hroot.toml"
    config.write_text("gc_keep_commits = 0\n")
    zero = hroot("serve", "--config", config, "--data", data)
    assert zero.returncode == 2 and "gc_keep_commits must be a positive integer" in zero.stderr
    config.write_text('gc_keep_days = "week"\n')
    text = hroot("serve", "--config", config, "--data", data)
    assert text.returncode == 2 and "gc_keep_days must be of type float" in text.stderr
    assert not data.exists()


def test_serve_applies_its_retention(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    _three_versions(data)
    config = tmp_path / "hroot.toml"
    config.write_text("gc_keep_commits = 1\ngc_interval = 0.5\n")
    log = tmp_path / "serve.log"
    server = serve(data, log, "--config", str(config))
    try:
        wait_for(lambda: "retention dropped" in log.read_text())
    finally:
        server.terminate()
        server.wait(20)
    assert "retention dropped 0 untagged manifests, 0 blobs, 2 commits" in log.read_text()
    assert _commits(data, "app") == 2


def test_gc_with_a_short_expiry_beside_a_server_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    registry_with_leftovers(data)
    log = tmp_path / "serve.log"
    server = serve(data, log)
    try:
        wait_for(lambda: "serving " in log.read_text())
        refused = hroot("gc", "--expiry", "0", "--data", data)
        beside = hroot("gc", "--data", data)  # the default expiry, a day
    finally:
        server.terminate()
        server.wait(20)
    assert refused.returncode == 1
    assert "(a server?): an expiry under 3600 s is safe only without it" in refused.stderr
    assert beside.returncode == 0, beside.stderr
    alone = hroot("gc", "--expiry", "0", "--data", data)
    assert alone.returncode == 0, alone.stderr
