"""The log lines (registry.logs): a line per request and per commit, start and stop, in text
and in JSON, and never a secret.

The in-process tests format the records the real app logs with hroot's own formatters;
the last test runs `python -m registry serve --log-format json` and reads its stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from registry.logs import FORMAT, JsonFormatter, log_start
from registry.upstreams import Upstream
from storage import Store
from tests.api.helpers import Api
from tests.api.test_auth import basic, bearer, write_htpasswd
from tests.documents import OCI_MANIFEST, digest_of, image_manifest
from tests.e2e.conftest import serving

MakeApi = Callable[..., Awaitable[Api]]

DOCKER_UA = (
    "docker/20.10.24 go/go1.19.9 git-commit/5d6db84 kernel/6.1.0-18-amd64 os/linux "
    "arch/amd64 UpstreamClient(Docker-Client/20.10.24 \\(linux\\))"
)
PASSWORD = "pw-5ecret-Q9"
UPSTREAM_PASSWORD = "upstream-5ecret-Z3"
TEXT = logging.Formatter(FORMAT)
JSON = JsonFormatter()


def served(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records `hroot serve` writes: without aiohttp's own access log, which the test
    server keeps on and hroot turns off (it logs whole query strings)."""
    return [r for r in caplog.records if r.name != "aiohttp.access"]


def text_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The messages `logger` logged, as the text format writes them (without the time)."""
    return [TEXT.format(r).split(" ", 2)[2] for r in caplog.records if r.name == logger]


def json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Every record, as the JSON format writes it: one line each, parsed."""
    lines = [JSON.format(r) for r in served(caplog)]
    assert all("\n" not in line for line in lines)
    return [json.loads(line) for line in lines]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(caplog) if line.get("event") == event]


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        await asyncio.sleep(0.05)


def git(gitdir: Path, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", gitdir, *args], capture_output=True, check=True)
    return done.stdout.decode().strip()


async def test_a_request_line_in_text(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    image = await api.push_image("team/app", "v1")
    resp = await api.client.get(
        "/v2/team/app/manifests/v1",
        headers={"User-Agent": DOCKER_UA, "Accept": OCI_MANIFEST},
    )
    assert resp.status == 200
    put, get = text_lines(caplog, "hroot.access")[-2:]
    size = len(image.manifest)
    assert re.fullmatch(
        rf'INFO hroot.access 127\.0\.0\.1 - "PUT /v2/team/app/manifests/v1" 201 in={size} '
        r"out=0 \d+\.\d{3}s Python/3\.\d+",
        put,
    ), put
    assert re.fullmatch(
        rf'INFO hroot.access 127\.0\.0\.1 - "GET /v2/team/app/manifests/v1" 200 in=0 '
        rf"out={size} \d+\.\d{{3}}s docker/20\.10\.24",
        get,
    ), get


async def test_a_request_line_in_json(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    layer = b"a layer of bytes" * 100
    digest = digest_of(layer)
    resp = await api.client.post(
        f"/v2/app/blobs/uploads/?digest={digest}",
        data=layer,
        headers={"User-Agent": "skopeo/1.9.3"},
    )
    assert resp.status == 201
    resp = await api.client.get(f"/v2/app/blobs/{digest}", headers={"User-Agent": "oras-py"})
    assert await resp.read() == layer
    await api.client.get("/v2/", headers={"User-Agent": "containerd/1.6.20+unknown"})
    await api.client.get("/nothing/here", skip_auto_headers=["User-Agent"])
    post, get, base, missing = events(caplog, "request")
    assert post["level"] == "info" and post["logger"] == "hroot.access"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", post["time"])
    assert post["message"].startswith('127.0.0.1 - "POST /v2/app/blobs/uploads/?digest=sha256:')
    assert {k: post[k] for k in ("method", "route", "repository", "digest", "status")} == {
        "method": "POST",
        "route": "/v2/{name}/blobs/uploads/",
        "repository": "app",
        "digest": digest,
        "status": 201,
    }
    assert (post["bytes_in"], post["client"], post["user"], post["aborted"]) == (
        len(layer),
        "skopeo/1.9.3",
        None,
        None,
    )
    assert (get["route"], get["digest"], get["reference"], get["client"]) == (
        "/v2/{name}/blobs/{digest}",
        digest,
        None,
        "oras-py",
    )
    assert get["bytes_in"] == 0 and get["bytes_out"] > len(layer)  # a stream: its head too
    assert isinstance(get["seconds"], float) and 0 <= get["seconds"] < 10
    assert (base["route"], base["repository"], base["status"], base["client"]) == (
        "/v2/",
        None,
        200,
        "containerd/1.6.20+unknown",
    )
    assert (missing["route"], missing["status"], missing["client"]) == (None, 404, "-")


async def test_a_client_name_is_one_short_printable_word(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for agent in ("python-requests/2.31.0", "x" * 300 + " y"):
        await api.client.get("/v2/", headers={"User-Agent": agent})
    raw = b"GET /v2/ HTTP/1.1\r\nHost: h\r\nUser-Agent: evil\xff\xe2\x80\x8bclient/1 z\r\n\r\n"
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    writer.write(raw)
    assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert [r["client"] for r in events(caplog, "request")] == [
        "python-requests/2.31.0",
        "x" * 40,
        "evil\\udcff\\u200bclient/1",
    ]


async def test_only_the_api_query_parameters_are_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """`?n=` and `?last=` are the API's; a token a client puts in the query is not logged."""
    caplog.set_level(logging.INFO)
    await api.push_image("app", "v1")
    await api.client.get("/v2/app/tags/list?n=1&access_token=tok-5ecret&last=a")
    (line,) = [r for r in events(caplog, "request") if r["route"] == "/v2/{name}/tags/list"]
    assert line["path"] == "/v2/app/tags/list?n=1&last=a"
    assert not any("tok-5ecret" in TEXT.format(r) for r in served(caplog))


async def test_a_line_for_each_commit(
    api: Api, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    image = await api.push_image("team/app", "v1")
    pushed = git(store.path, "rev-parse", "hroot/team+app")
    resp = await api.client.delete("/v2/team/app/manifests/v1")
    assert resp.status == 202
    deleted = git(store.path, "rev-parse", "hroot/team+app")
    assert text_lines(caplog, "hroot.commit") == [
        f"INFO hroot.commit commit {pushed[:12]} push team/app:v1 {image.digest}",
        f"INFO hroot.commit commit {deleted[:12]} delete tag team/app:v1",
    ]
    assert [{k: v for k, v in r.items() if k != "time"} for r in events(caplog, "commit")] == [
        {
            "level": "info",
            "logger": "hroot.commit",
            "message": f"commit {pushed[:12]} push team/app:v1 {image.digest}",
            "event": "commit",
            "repository": "team/app",
            "tag": "v1",
            "digest": image.digest,
            "commit": pushed,
        },
        {
            "level": "info",
            "logger": "hroot.commit",
            "message": f"commit {deleted[:12]} delete tag team/app:v1",
            "event": "commit",
            "repository": "team/app",
            "tag": "v1",
            "digest": image.digest,
            "commit": deleted,
        },
    ]


async def test_two_apps_over_one_store_log_a_commit_once(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await make_api()
    await make_api()
    await first.push_image("app", "v1")
    assert len(events(caplog, "commit")) == 1


async def test_a_proxied_image_is_a_commit_line_naming_its_upstream(
    aiohttp_client: AiohttpClient, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream_store = Store.open(tmp_path / "upstream.git")
    try:
        upstream = Api(await aiohttp_client(create_app(Config(data=upstream_store.path))))
        image = await upstream.push_image("lib/app", "v1")
        url = f"http://{upstream.client.host}:{upstream.client.port}"
        config = Config(data=store.path, upstream=(Upstream(url, "up"),))
        proxy = Api(await aiohttp_client(create_app(config, store)))
        caplog.set_level(logging.INFO)
        resp = await proxy.client.get("/v2/up/lib/app/manifests/v1")
        assert resp.status == 200
        await until(lambda: bool(events(caplog, "commit")))  # committed once its blobs are in
        (line,) = events(caplog, "commit")
    finally:
        upstream_store.close()
    assert line["digest"] == image.digest and line["tag"] == "v1"
    assert line["proxied_from"] == f"{url}/lib/app:v1"
    assert line["commit"] == git(store.path, "rev-parse", "hroot/up+lib+app")


def test_the_start_line_says_what_runs_and_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    follower = Config(data=tmp_path / "hroot.git", follow="https://u:pw-5ecret-Q9@primary/git/")
    log_start(follower, "https")
    upstream = Upstream("https://registry-1.docker.io", password=UPSTREAM_PASSWORD)
    log_start(Config(data=tmp_path / "p.git", upstream=(upstream,), htpasswd=Path("x")), "http")
    follows, proxies = text_lines(caplog, "hroot.registry")
    assert re.fullmatch(
        rf"INFO hroot.registry serving {tmp_path.resolve()}/hroot.git on https://127.0.0.1:5000 "
        r"\(hroot \S+; auth off, TLS on, proxy off, follower of https://primary/git/\)",
        follows,
    ), follows
    assert proxies.endswith(
        "auth on, TLS off, proxy of https://registry-1.docker.io, follower off)"
    )
    first, second = events(caplog, "start")
    assert {k: first[k] for k in ("data", "url", "auth", "tls", "proxy", "follow")} == {
        "data": str(tmp_path.resolve() / "hroot.git"),
        "url": "https://127.0.0.1:5000",
        "auth": False,
        "tls": True,
        "proxy": [],
        "follow": "https://primary/git/",
    }
    assert (second["auth"], second["proxy"], second["follow"]) == (
        True,
        ["https://registry-1.docker.io"],
        None,
    )
    assert PASSWORD not in caplog.text and UPSTREAM_PASSWORD not in caplog.text


async def test_no_secret_in_any_line(
    make_api: MakeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Passwords (Basic, the token endpoint's form), tokens (a header, the query) and the
    password of a follow URL reach no line, in either format."""
    caplog.set_level(logging.DEBUG)
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": PASSWORD})
    api = await make_api(htpasswd=htpasswd)
    resp = await api.client.get(
        "/auth/token?service=hroot&scope=repository:app:pull,push",
        headers=basic("alice", PASSWORD),
    )
    token = (await resp.json())["token"]
    await api.client.get("/v2/", headers=basic("alice", "wrong-" + PASSWORD))
    await api.client.post("/v2/app/blobs/uploads/", headers=bearer(token))
    await api.client.get(f"/v2/app/tags/list?access_token={token}", headers=bearer(token))
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    await api.client.post("/auth/token", data={**form, "service": "hroot", "scope": ""})
    follower = await make_api(follow=f"http://alice:{PASSWORD}@127.0.0.1:1/git/")
    await follower.client.get("/v2/")
    await until(lambda: "cannot fetch from http://127.0.0.1:1/git/" in caplog.text)
    records = served(caplog)
    text = "\n".join(TEXT.format(r) for r in records)
    assert '127.0.0.1 alice "POST /v2/app/blobs/uploads/" 202' in text
    everything = text + "\n".join(JSON.format(r) for r in records)
    for secret in (PASSWORD, token, token.split(".")[-1]):
        assert secret not in everything


def test_python_warnings_are_json_lines_too(caplog: pytest.LogCaptureFixture) -> None:
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a warning\nover two lines", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
    (line,) = [r for r in json_lines(caplog) if r["logger"] == "py.warnings"]
    assert line["level"] == "warning" and "a warning\nover two lines" in line["message"]


def test_serve_log_format_json(tmp_path: Path) -> None:
    """A real server: its start line, a push, aiohttp's own line for garbage, a download in
    flight at SIGTERM, the stop lines; every line of its output is one JSON object."""
    data, log = tmp_path / "hroot.git", tmp_path / "server.log"
    with serving(data, log, "--log-format", "json") as server:
        base = f"http://{server.host}"
        layer, config = secrets.token_bytes(16 << 20), b'{"os": "linux"}'
        for blob in (layer, config):
            _request("POST", f"{base}/v2/app/blobs/uploads/?digest={digest_of(blob)}", blob)
        manifest = image_manifest(config, [layer])
        _request("PUT", f"{base}/v2/app/manifests/v1", manifest, {"Content-Type": OCI_MANIFEST})
        host, port = server.host.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as garbage:
            garbage.sendall(b"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Bad: a\x7fb\r\n\r\n")
            garbage.recv(65536)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the server waits
            sock.settimeout(20)
            sock.connect((host, int(port)))
            sock.sendall(
                f"GET /v2/app/blobs/{digest_of(layer)} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
            )
            received = sock.recv(65536)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            _wait_for(lambda: '"event": "stopping"' in log.read_text(), log)
            time.sleep(0.3)
            while chunk := sock.recv(1 << 20):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        # Whole: the server waits for what its connections still buffer before it exits.
        assert received[received.index(b"\r\n\r\n") + 4 :] == layer
        assert server.process.wait(timeout=30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    by_event = {line.get("event"): line for line in lines}
    start = by_event["start"]
    assert start["url"] == base and start["data"] == str(data.resolve())
    commit = by_event["commit"]
    assert commit["commit"] == git(data, "rev-parse", "hroot/app")
    assert (commit["repository"], commit["tag"]) == ("app", "v1")
    (refused,) = [line for line in lines if line["logger"] == "aiohttp.server"]
    assert "Invalid header value char" in refused["message"]  # over lines, in one object
    stopping, stopped = by_event["stopping"], by_event["stopped"]
    assert (stopping["signal"], stopping["in_flight"]) == ("SIGTERM", 1)
    assert 0.3 <= stopped["in_flight_seconds"] <= stopped["seconds"]
    assert lines[-1] is stopped
    download = lines[-2]
    assert (download["route"], download["status"], download["aborted"]) == (
        "/v2/{name}/blobs/{digest}",
        200,
        None,
    )
    assert download["bytes_out"] == received.index(b"\r\n\r\n") + 4 + len(layer)


def _request(method: str, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def _wait_for(condition: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
