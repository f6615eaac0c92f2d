"""GET /v2/, unknown routes and methods, internal errors, and garbage on the port."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from storage import Store
from storage.errors import StoreError
from tests.api.helpers import API_VERSION, Api, assert_error

# The start of a TLS 1.2 ClientHello, what docker/skopeo/podman send to a plain-HTTP port first.
CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
async def test_version_check_answers_empty_json(api: Api, path: str) -> None:
    resp = await api.client.get(path)
    assert resp.status == 200
    assert await resp.json() == {}
    assert resp.headers["Docker-Distribution-API-Version"] == API_VERSION


async def test_unknown_route_is_a_json_404(api: Api) -> None:
    """/v1/… and /v2/<name>/nothing match no route: 404 NOT_FOUND as JSON, with the header."""
    await assert_error(await api.client.get("/v1/_ping"), 404, "NOT_FOUND")
    await assert_error(await api.client.get("/v2/img/nothing/here"), 404, "NOT_FOUND")


async def test_wrong_method_is_a_json_405(api: Api) -> None:
    """POST /v2/ and PATCH on a manifest: 405 UNSUPPORTED, with Allow."""
    resp = await api.client.post("/v2/")
    await assert_error(resp, 405, "UNSUPPORTED")
    assert "GET" in resp.headers["Allow"]
    await assert_error(await api.client.patch("/v2/img/manifests/latest"), 405, "UNSUPPORTED")


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("a bug"), StoreError(message="a store error with no status")],
    ids=["exception", "unmapped-store-error"],
)
async def test_failure_without_a_status_is_a_logged_json_500(
    aiohttp_client: AiohttpClient,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
) -> None:
    """A bug in a handler, or a store error errors.py has no status for: 500 UNKNOWN as
    JSON (an exception's text stays out of it), the traceback in the log."""

    async def broken(request: web.Request) -> web.Response:
        raise failure

    app = create_app(Config(data=store.path), store)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    error = await assert_error(await client.get("/broken"), 500, "UNKNOWN")
    assert "a bug" not in str(error)
    (record,) = [r for r in caplog.records if r.name == "hroot.registry"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize(
    "garbage",
    [CLIENT_HELLO, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"],
    ids=["tls-client-hello", "malformed-header"],
)
async def test_garbage_on_the_port_gets_400_and_no_error_log(
    api: Api, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    """Non-HTTP bytes: aiohttp answers 400 and closes; nothing crash-level is logged."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(garbage)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.split(b"\r\n")[0].split(b" ")[1] == b"400"
    assert all(r.levelno < logging.WARNING and not r.exc_info for r in caplog.records)
    resp = await api.client.get("/v2/")
    assert resp.status == 200
