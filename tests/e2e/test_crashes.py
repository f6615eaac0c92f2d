"""SIGKILL of the server at random moments of pushes and of gc, then a restart (issue 10).

Each round starts `hroot serve` with its own gc every 0.3 s (retention on, expiry
2 s), pushes from three HTTP clients (chunked uploads of fresh layers) and runs
`hroot gc` beside it, and kills both at a random moment. After every restart: every
image acknowledged before the crash pulls byte for byte, and the
first push takes no wait for a lock the crash left. At the end `git fsck` and
`hroot fsck` are clean, and one `hroot gc` removes every leftover.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, Hroot, serving

pytestmark = pytest.mark.e2e

ROUNDS = 12
CHUNK = 256 << 10
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _request(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


def _upload(host: str, repo: str, blob: bytes) -> str:
    """POST, PATCH in chunks, PUT: a chunked upload, as docker pushes."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _, headers, _ = _request("POST", f"http://{host}/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    for start in range(0, len(blob), CHUNK):
        piece = blob[start : start + CHUNK]
        _, headers, _ = _request(
            "PATCH",
            f"http://{host}{location}" if location.startswith("/") else location,
            piece,
            {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(piece) - 1}",
            },
        )
        location = headers["Location"]
    separator = "&" if "?" in location else "?"
    url = f"http://{host}{location}" if location.startswith("/") else location
    _request("PUT", f"{url}{separator}digest={digest}")
    return digest


def _push(host: str, repo: str, tag: str) -> str:
    """A fresh image (a config, a 1 MiB layer): its manifest's digest once acknowledged."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layer = os.urandom(1 << 20)
    descriptors = []
    for blob, media_type in (
        (config, "application/vnd.oci.image.config.v1+json"),
        (layer, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ):
        descriptors.append(
            {"mediaType": media_type, "digest": _upload(host, repo, blob), "size": len(blob)}
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
    ).encode()
    status, _, _ = _request(
        "PUT", f"http://{host}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 201
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def _pulls(server: Hroot, repo: str, digest: str) -> bool:
    """The manifest and every blob of it answer 200 with their digests."""

    def get(path: str) -> bytes:
        _, _, body = _request(
            "GET", f"http://{server.host}/v2/{repo}/{path}", headers={"Accept": OCI_MANIFEST}
        )
        return body

    manifest = get(f"manifests/{digest}")
    if "sha256:" + hashlib.sha256(manifest).hexdigest() != digest:
        return False
    document = json.loads(manifest)
    for blob in [document["config"], *document["layers"]]:
        if "sha256:" + hashlib.sha256(get(f"blobs/{blob['digest']}")).hexdigest() != blob["digest"]:
            return False
    return True


def _push_until_killed(
    host: str,
    prefix: str,
    worker: int,
    stop: threading.Event,
    acknowledged: list[tuple[str, str]],
    refused: list[str],
) -> None:
    """Push fresh images to r0..r2 until `stop`, or until the server dies under a push."""
    n = 0
    while not stop.is_set():
        repo = f"r{(worker + n) % 3}"
        n += 1
        try:
            acknowledged.append((repo, _push(host, repo, f"{prefix}-{n}")))
        except urllib.error.HTTPError as error:  # the server answered: it was not killed yet
            refused.append(f"{repo}: {error.code} {error.read()[:300]!r}")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            return  # killed under it: not acknowledged


def _gc_was_running(log: Path) -> int:
    """1 if the server's last gc had started and not finished when it was killed."""
    lines = [line for line in log.read_text().splitlines() if "hroot.gc gc " in line]
    return int(bool(lines) and "hroot.gc gc started" in lines[-1])


def test_sigkill_during_pushes_and_gc_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    # an expiry shorter than the pause between two chunks of an upload would take
    # uploads in progress, as it says: 2 s keeps them and prunes all the rest
    flags = ("--gc-interval", "0.3", "--gc-expiry", "2", "--gc-keep-commits", "30")
    acknowledged: list[tuple[str, str]] = []
    refused: list[str] = []  # pushes the server answered with an error
    first_push_seconds: list[float] = []
    killed_in_gc = checked = 0
    rng = random.Random(int(os.environ.get("HROOT_CRASH_SEED", "10")))
    for round_ in range(ROUNDS):
        log = tmp_path / f"server-{round_}.log"
        with serving(data, log, *flags) as server:
            for repo, digest in acknowledged[checked:]:  # the last round's, at risk in its crash
                assert _pulls(server, repo, digest), f"{repo}@{digest} lost after a crash"
            checked = len(acknowledged)
            started = time.monotonic()
            acknowledged.append((f"r{round_ % 3}", _push(server.host, f"r{round_ % 3}", "first")))
            first_push_seconds.append(time.monotonic() - started)

            stop = threading.Event()
            gc = subprocess.Popen(
                [sys.executable, "-m", "registry", "gc", "--data", str(data)],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            pushers = [
                threading.Thread(
                    target=_push_until_killed,
                    args=(server.host, f"{round_}-{worker}", worker, stop, acknowledged, refused),
                )
                for worker in range(3)
            ]
            for pusher in pushers:
                pusher.start()
            time.sleep(rng.uniform(0.3, 2.5))
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gc.pid, signal.SIGKILL)
            stop.set()
            for pusher in pushers:
                pusher.join()
            gc.wait()
            server.process.wait()
            killed_in_gc += _gc_was_running(log)

    with serving(data, tmp_path / "server-last.log") as server:
        for repo, digest in acknowledged:
            assert _pulls(server, repo, digest), f"{repo}@{digest} lost after a crash"
    print(
        f"\n{ROUNDS} SIGKILLs ({killed_in_gc} during the server's gc), {len(acknowledged)} "
        f"pushes acknowledged, none lost; first push after a restart: "
        f"max {max(first_push_seconds):.2f} s"
    )
    assert refused == []
    assert max(first_push_seconds) < 5  # a crash's lock is broken at start, not after 10 s
    server.fsck()
    fsck = subprocess.run(
        [sys.executable, "-m", "registry", "fsck", "--data", str(data)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    collect = subprocess.run(
        [sys.executable, "-m", "registry", "gc", "--expiry", "0", "--data", str(data)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert collect.returncode == 0, collect.stderr
    assert list((data / "hroot" / "uploads").iterdir()) == []
    assert list((data / "objects").glob("tmp_obj_*")) == []
    assert [*(data / "refs").rglob("*.lock"), *data.glob("packed-refs.lock")] == []
    refs = subprocess.run(
        ["git", "--git-dir", str(data), "for-each-ref", "refs/hroot/"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert refs.stdout == ""  # no staging or incoming ref outlives a gc with expiry 0
