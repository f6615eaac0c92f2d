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
