"""What a real `hroot serve` answers to requests aiohttp refuses before the app sees them.

Raw bytes on a socket, as a scanner or a broken client sends them: each refusal is an OCI
JSON error with the API-version header and `Server: hroot`, the connection closes, nothing
crash-level is logged, and the server goes on serving.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient

from registry.server import Runner
from tests.api.helpers import API_VERSION
from tests.api.test_base import CLIENT_HELLO
from tests.e2e.conftest import Hroot, serving

# Limits of the served config, far below the defaults, so the tests show they are applied.
MAX_HEADER_SIZE = 2048
MAX_HEADERS = 20
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def exchange(server: Hroot, data: bytes) -> Answer:
    """Send raw bytes and read the answer up to the end of the connection, which the server
    must close (the request ends with `Connection: close` or cannot be parsed)."""
    host, port = server.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in fields:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split(" ")[1]), headers, body)


def get(path: str, *fields: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: hroot\r\n%sConnection: close\r\n\r\n" % (
        path.encode(),
        b"".join(field + b"\r\n" for field in fields),
    )


def assert_hroot_headers(answer: Answer) -> None:
    assert answer.headers["docker-distribution-api-version"] == API_VERSION
    assert answer.headers["server"] == "hroot"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hroot]:
    root = tmp_path_factory.mktemp("lowlevel")
    config = root / "hroot.toml"
    config.write_text(f"max_header_size = {MAX_HEADER_SIZE}\nmax_headers = {MAX_HEADERS}\n")
    with serving(root / "hroot.git", root / "server.log", "--config", str(config)) as server:
        yield server


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (get("/v2/" + "a" * 2 * MAX_HEADER_SIZE), 400, "request line or header field too long"),
        (
            get("/v2/", b"X-Big: " + b"b" * 2 * MAX_HEADER_SIZE),
            400,
            "request line or header field too long",
        ),
        (
            get("/v2/", b"X-" + b"n" * 2 * MAX_HEADER_SIZE + b": 1"),
            400,
            "request line or header field too long",
        ),
        (get("/v2/", *(b"X-%d: 1" % n for n in range(MAX_HEADERS))), 431, "too many header fields"),
        (b"hello there\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET /v2/ HTTP/7.0\r\nHost: x\r\n\r\n", 400, "malformed HTTP request"),
        (CLIENT_HELLO, 400, "malformed HTTP request"),
    ],
    ids=[
        "request-line-too-long",
        "header-value-too-long",
        "header-name-too-long",
        "too-many-headers",
        "garbage-line",
        "malformed-header",
        "bad-http-version",
        "tls-client-hello",
    ],
)
def test_a_refused_request_gets_an_oci_json_error(
    server: Hroot, request_bytes: bytes, status: int, message: str
) -> None:
    server.log_mark = server.log.stat().st_size
    answer = exchange(server, request_bytes)
    assert answer.status == status, answer
    assert answer.headers["content-type"] == JSON
    assert_hroot_headers(answer)
    (error,) = json.loads(answer.body)["errors"]
    assert set(error) == {"code", "message", "detail"}
    assert (error["code"], error["message"]) == ("UNKNOWN", message)
    if "too long" in message:  # the limit, not the client's bytes echoed back
        assert error["detail"] == {"max_bytes": MAX_HEADER_SIZE}
    assert exchange(server, get("/v2/")).status == 200
    log = server.new_log()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_requests_within_the_limits_are_served(server: Hroot) -> None:
    """The limits are the config's: just under each, the request is served."""
    under = get(
        "/v2/",
        b"X-Big: " + b"b" * (MAX_HEADER_SIZE - 100),
        *(b"X-%d: 1" % n for n in range(MAX_HEADERS - 3)),  # Host and Connection are the rest
    )
    answer = exchange(server, under)
    assert (answer.status, answer.body) == (200, b"{}")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/", 200),
        ("/v2/nothing/manifests/here", 404),
        ("/git/info/refs?service=git-upload-pack", 200),
    ],
    ids=["version-check", "json-error", "git-stream"],
)
def test_every_answer_names_hroot_only(server: Hroot, path: str, status: int) -> None:
    """No `Python/3.x aiohttp/3.y`: the Server header says hroot, streamed answers included."""
    answer = exchange(server, get(path))
    assert answer.status == status
    assert_hroot_headers(answer)


class HrootTestServer(TestServer):
    """aiohttp's TestServer running its app as `hroot serve` does, with registry.server.Runner."""

    async def _make_runner(self, **kwargs: Any) -> Runner:
        return Runner(self.app, **kwargs)


async def test_a_failure_only_aiohttp_catches_is_a_json_500(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception that no middleware turned into an answer (here: an app without hroot's
    middlewares) is a JSON 500 with hroot's headers; its traceback goes to the log only."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a secret bug")

    app = web.Application()
    app.router.add_get("/", broken)
    client = await aiohttp_client(HrootTestServer(app))
    resp = await client.get("/")
    assert resp.status == 500
    assert resp.headers["Content-Type"] == JSON
    assert (resp.headers["Docker-Distribution-API-Version"], resp.headers["Server"]) == (
        API_VERSION,
        "hroot",
    )
    (error,) = (await resp.json())["errors"]
    assert (error["code"], error["message"]) == ("UNKNOWN", "internal server error")
    assert "secret" not in await resp.text()
    assert any("a secret bug" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
