"""The HTTP(S) server around the app: aiohttp's, but hroot's own answers where aiohttp would
answer by itself, and TLS.

aiohttp answers requests it cannot parse (a request line or header over its limits, too
many headers, a TLS ClientHello on a plain port, any garbage) from its RequestHandler,
outside the app: no middleware and no on_response_prepare hook runs. `Runner` makes those
answers OCI JSON errors with the headers every answer of hroot carries.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from http import HTTPStatus
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from registry import health, metrics
from registry.config import Config, parse_listen
from registry.errors import internal_error_response, json_error
from registry.logs import log_start, log_stopped, log_stopping
from registry.middleware import HEADERS, add_api_version

log = logging.getLogger("hroot.registry")

FLUSH_SECONDS = 5.0  # what closed connections get at exit to send what they buffered
# aiohttp's message for too many header fields, the same from its C and Python parsers;
# for a line over the limit it raises LineTooLong without saying which line it was.
TOO_MANY_HEADERS = "Too many headers received"


class TLSFilesInvalid(ValueError):
    """A certificate or key that cannot serve HTTPS; the message says why, in one line."""


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """HTTPS as registry clients expect it: TLS 1.2 or newer, HTTP/1.1 (aiohttp speaks no
    HTTP/2), Python's modern ciphers, no compression (CRIME)."""
    for path in (cert, key):
        try:
            path.open("rb").close()
        except OSError as e:
            raise TLSFilesInvalid(f"cannot read {path}: {e.strerror}") from e

    def encrypted() -> bytes:  # OpenSSL would otherwise ask for a passphrase on the terminal
        raise TLSFilesInvalid(f"the key {key} is encrypted: hroot needs an unencrypted key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise TLSFilesInvalid(f"the key {key} is not the key of the certificate {cert}") from e
        raise TLSFilesInvalid(
            f"{cert} must hold a PEM certificate (chain) and {key} its PEM private key ({e})"
        ) from e
    return context


def lowlevel_error_response(status: int, exc: BaseException | None) -> web.Response:
    """The OCI JSON error for what aiohttp refused before the app saw a request."""
    if isinstance(exc, HttpProcessingError):
        if exc.message == TOO_MANY_HEADERS:
            return json_error(431, "UNKNOWN", "too many header fields", exc.message)
        if isinstance(exc, LineTooLong):  # its message would echo the client's bytes
            limit = {"max_bytes": exc.args[1]}
            return json_error(400, "UNKNOWN", "request line or header field too long", limit)
        return json_error(400, "UNKNOWN", "malformed HTTP request", exc.message)
    if status == 500:
        return internal_error_response()
    return json_error(status, "UNKNOWN", HTTPStatus(status).phrase.lower())


class _Handler(RequestHandler):
    """One connection, answering with OCI JSON errors where aiohttp answers plain text."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (registry.logs quiets client garbage) and raises
        # when part of an answer went out already; its plain-text answer is dropped.
        super().handle_error(request, status, exc, message)
        response = lowlevel_error_response(status, exc)
        response.headers.update(HEADERS)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, making connections of `_Handler`."""

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """web.AppRunner whose connections answer unparsable requests with OCI JSON errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds a plain web.Server; _Server only differs in the handlers it makes.
        server.__class__ = _Server
        return server


def serve(
    app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext | None, config: Config
) -> None:
    """Serve `app` on the bound `sock` until SIGINT or SIGTERM, then give the requests in
    flight config.shutdown_timeout seconds and run the app's cleanup."""
    asyncio.run(_serve(app, sock, ssl_context, config))


async def _serve(
    app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext | None, config: Config
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _stop, app, signal.Signals(signum), stop, config)
    server = Runner(
        app,
        max_line_size=config.max_header_size,
        max_field_size=config.max_header_size,
        max_headers=config.max_headers,
        access_log=None,  # registry.middleware.log_access logs each request
        shutdown_timeout=config.shutdown_timeout,
    )
    await server.setup()
    operations: web.AppRunner | None = None
    try:
        await web.SockSite(server, sock, ssl_context=ssl_context).start()
        scheme = "http" if ssl_context is None else "https"
        log_start(config, scheme)
        if config.metrics_listen is not None:
            operations = await _serve_operations(app, config.metrics_listen)
        await stop.wait()
    finally:
        if operations is not None:  # first: its handlers use the app's threads
            await operations.cleanup()
        transports = [c.transport for c in server.server.connections] if server.server else []
        await server.cleanup()
        await _flushed([t for t in transports if t is not None])
    log_stopped(app)


async def _flushed(transports: list[asyncio.BaseTransport], limit: float = FLUSH_SECONDS) -> None:
    """Wait (at most `limit` seconds) until the closed connections have sent what they
    still buffered: the loop ends with the process, and with it an answer's last bytes."""
    deadline = asyncio.get_running_loop().time() + limit
    while any(_buffered(t) for t in transports) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def _buffered(transport: asyncio.BaseTransport) -> bool:
    return isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size() > 0


def _stop(
    app: web.Application, signum: signal.Signals, stop: asyncio.Event, config: Config
) -> None:
    """The first SIGINT or SIGTERM: say so, with the requests in flight, and stop serving."""
    if not stop.is_set():
        log_stopping(app, signum.name, config.shutdown_timeout)
        stop.set()


async def _serve_operations(app: web.Application, listen: str) -> web.AppRunner:
    """/metrics, /health and /ready of `app` on an address of their own, over plain HTTP,
    as Distribution's debug server: a small app with nothing else, no log line per scrape.
    An address that cannot be bound stops the server (exit status 1)."""
    operations = web.Application()
    operations.add_routes([*metrics.routes(app), *health.routes(app)])
    operations.on_response_prepare.append(add_api_version)
    runner = web.AppRunner(operations, access_log=None)
    await runner.setup()
    host, port = parse_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        log.error("cannot listen on %s for /metrics, /health and /ready: %s", listen, e)
        raise SystemExit(1) from None
    log.info("serving /metrics, /health and /ready on http://%s", listen)
    return runner
