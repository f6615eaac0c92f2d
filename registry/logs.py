"""Logging: plain lines on stderr, and no crash reports for clients that send garbage."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ClientGarbageFilter(logging.Filter):
    """Demote aiohttp's "Error handling request" for unparsable requests to a one-line INFO.

    docker, skopeo and podman open with a TLS ClientHello on plain-HTTP ports, and scanners
    send anything: aiohttp answers 400 and closes, which is right, but logs a traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc.message}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def setup_logging(level: str) -> None:
    """Plain lines on stderr for the `hroot serve` process."""
    logging.basicConfig(level=level.upper(), format=FORMAT)


def quiet_client_garbage() -> None:
    """Install ClientGarbageFilter on aiohttp's server logger, once, whoever runs the app."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientGarbageFilter) for f in server_log.filters):
        server_log.addFilter(ClientGarbageFilter())
