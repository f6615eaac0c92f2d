"""Notification webhooks end to end: skopeo pushes, pulls and deletes against a real
`hroot serve --config` whose `[[webhook]]` tables name a receiver on loopback, and a
receiver that is not there."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, ImageMaker, serving
from .tools import free_port

pytestmark = pytest.mark.e2e

NO_TLS = "--tls-verify=false"


class Receiver(ThreadingHTTPServer):
    """Records the events of every envelope POSTed to it, with the request's headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/events"

    def wait_for(self, action: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The events of `action` once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [e for e in self.events if e["action"] == action]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"{len(found)} {action} event(s): {self.events}"
                return found
            time.sleep(0.05)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.events += json.loads(body)["events"]
            self.server.headers.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_skopeo_push_pull_delete_make_events(
    skopeo: Cli, make_image: ImageMaker, receiver: Receiver, tmp_path: Path
) -> None:
    dead = f"http://hook:hook-secret@127.0.0.1:{free_port()}/events"  # nobody listens
    config = tmp_path / "hroot.toml"
    config.write_text(
        f'[[webhook]]\nurl = "{receiver.url}"\nheaders = {{ X-Hook = "e2e" }}\n\n'
        f'[[webhook]]\nurl = "{dead}"\nactions = ["push"]\ntimeout = 1\n'
    )
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", {"/etc/hello": secrets.token_bytes(64)})
    with serving(tmp_path / "hroot.git", tmp_path / "server.log", "--config", str(config)) as hroot:
        ref = hroot.ref("events/app", "v1")
        start = time.perf_counter()
        skopeo(
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{ref}",
        )
        pushed_in = time.perf_counter() - start
        (push,) = receiver.wait_for("push")
        assert push["commit"] == hroot.git("rev-parse", hroot.branch("events/app")).strip()
        assert push["target"]["digest"] == digest and push["target"]["tag"] == "v1"
        assert push["target"]["repository"] == "events/app"
        assert push["request"]["useragent"].startswith("skopeo")

        skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'back'}:v1")
        pulls = receiver.wait_for("pull", 2)  # the manifest and at least one blob
        assert any(p["target"]["digest"] == digest for p in pulls)
        assert {p["target"]["mediaType"] for p in pulls} >= {"application/octet-stream"}

        skopeo("delete", NO_TLS, f"docker://{hroot.ref('events/app', digest)}")
        (delete,) = receiver.wait_for("delete")
        assert delete["target"]["digest"] == digest
        assert delete["commit"] == hroot.git("rev-parse", hroot.branch("events/app")).strip()
        assert "Manifest-Digest: " + digest in hroot.git("show", "-s", delete["commit"])
        assert all(h["X-Hook"] == "e2e" for h in receiver.headers)

        log = hroot.new_log()
        hroot.fsck()
    print(f"skopeo push with a dead webhook: {pushed_in:.2f} s")
    assert "hook-secret" not in log
    assert f"webhook http://127.0.0.1:{dead.rsplit(':', 1)[1].split('/')[0]}/events" in log
