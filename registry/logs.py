"""Logging: plain lines or JSON objects on stderr, and the lines only hroot can write.

Every line goes through the standard logging module. Lines with structure (a request, a
commit, the start and the stop) pass it as `extra={"fields": {...}}`: the text format
shows only the message, which already says it all for people; JSON writes each field as
a key of its own, so collectors need no grammar of hroot's messages. Nothing that can
hold a secret reaches a line: no request header but the User-Agent's first word, no
query parameter outside SAFE_QUERY, URLs without their user and password.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from registry import follow
from registry.common import STORE
from registry.config import Config
from storage import Store
from storage.types import Committed

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CLIENT_NAME_MAX = 40  # characters of the User-Agent's first product token kept

log = logging.getLogger("hroot.registry")
commit_log = logging.getLogger("hroot.commit")

# The query parameters the distribution API and the token endpoint define: names, digests,
# numbers, scopes. Any other one is dropped from the logged path: what a client adds
# beyond the API (an `access_token=`, a signed upload state) may be a credential.
SAFE_QUERY = frozenset({"digest", "mount", "from", "n", "last", "artifactType", "service", "scope"})


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


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, then the
    record's structured fields as keys of their own; a traceback is one escaped string."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", ()))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Lines on stderr for the `hroot serve` process: plain, or JSON for every line, Python's
    warnings and uncaught exceptions included (a collector cannot parse a bare traceback)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda a: _log_uncaught(a.exc_type, a.exc_value, a.exc_traceback)


def _log_uncaught(
    kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None
) -> None:
    logging.getLogger("hroot").critical("uncaught exception", exc_info=(kind, exc, tb))


def quiet_client_garbage() -> None:
    """Install ClientGarbageFilter on aiohttp's server logger, once, whoever runs the app."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientGarbageFilter) for f in server_log.filters):
        server_log.addFilter(ClientGarbageFilter())


@dataclass
class InFlight:
    """The requests being answered, counted on the event loop by the access log, so that
    the shutdown lines can say how many there were and how long they took to finish."""

    count: int = 0
    idle_since: float = 0.0  # time.monotonic() when count last fell to 0
    stopping_since: float = 0.0  # time.monotonic() when a stop signal came

    def begin(self) -> None:
        self.count += 1

    def end(self) -> None:
        self.count -= 1
        if not self.count:
            self.idle_since = time.monotonic()


IN_FLIGHT = web.AppKey("in_flight", InFlight)

# Stores whose commits are logged already: apps built over one store (tests make several)
# must not log each commit once per app.
_commits_logged: weakref.WeakSet[Store] = weakref.WeakSet()


def setup(app: web.Application) -> None:
    """Count the app's requests in flight and log each commit of its store."""
    app[IN_FLIGHT] = InFlight()
    store = app[STORE]
    if store not in _commits_logged:
        _commits_logged.add(store)
        store.on_commit(log_commit)


def log_commit(committed: Committed) -> None:
    """The commit line (a Store.on_commit listener: runs in the writing thread, so it only
    reads the trailers it was given)."""
    if not commit_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "event": "commit",
        "repository": committed.repository,
        "tag": committed.trailer("Tag"),
        "digest": committed.trailer("Manifest-Digest") or committed.trailer("Blob-Digest"),
        "commit": committed.commit,
    }
    if proxied := committed.trailer("Proxied-From"):
        fields["proxied_from"] = proxied
    commit_log.info(
        "commit %s %s", committed.commit[:12], committed.summary, extra={"fields": fields}
    )


def client_name(user_agent: str | None) -> str:
    """The User-Agent's first product token (`docker/20.10.24` of docker's long one),
    escaped so that no client can write a line of its own."""
    words = (user_agent or "").split(maxsplit=1)
    if not words:
        return "-"
    name = words[0][:CLIENT_NAME_MAX]
    return name if name.isprintable() else name.encode("unicode_escape").decode()


def logged_path(raw_path: str) -> str:
    """The request's path with only the SAFE_QUERY parameters of its query string."""
    path, _, query = raw_path.partition("?")
    kept = [p for p in query.split("&") if p.partition("=")[0] in SAFE_QUERY] if query else ()
    return f"{path}?{'&'.join(kept)}" if kept else path


def log_start(config: Config, scheme: str) -> None:
    """The first line of a running server: what it serves, where, and with what on."""
    proxy = [upstream.url for upstream in config.upstream]
    primary = follow.shown(config.follow) if config.follow is not None else None
    url = f"{scheme}://{config.listen}"
    data = config.data.resolve()
    hroot = _version()
    log.info(
        "serving %s on %s (hroot %s; auth %s, TLS %s, proxy %s, follower %s)",
        data,
        url,
        hroot,
        "on" if config.authenticates else "off",
        "on" if scheme == "https" else "off",
        f"of {', '.join(proxy)}" if proxy else "off",
        f"of {primary}" if primary else "off",
        extra={
            "fields": {
                "event": "start",
                "version": hroot,
                "data": str(data),
                "url": url,
                "auth": config.authenticates,
                "tls": scheme == "https",
                "proxy": proxy,
                "follow": primary,
            }
        },
    )


def log_stopping(app: web.Application, signal_name: str, timeout: float) -> None:
    """The line of a stop signal, saying how many requests are still being answered."""
    flight = app[IN_FLIGHT]
    flight.stopping_since = time.monotonic()
    in_flight = flight.count
    log.info(
        "%s: stopping; %d request(s) in flight, given up to %g s",
        signal_name,
        in_flight,
        timeout,
        extra={
            "fields": {
                "event": "stopping",
                "signal": signal_name,
                "in_flight": in_flight,
                "timeout": timeout,
            }
        },
    )


def log_stopped(app: web.Application) -> None:
    """The last line: how long stopping took, and the part of it the requests in flight took."""
    now = time.monotonic()
    flight = app[IN_FLIGHT]
    since = flight.stopping_since
    drained = max(0.0, (flight.idle_since if not flight.count else now) - since)
    log.info(
        "stopped in %.3f s; the requests in flight took %.3f s",
        now - since,
        drained,
        extra={
            "fields": {
                "event": "stopped",
                "seconds": round(now - since, 6),
                "in_flight_seconds": round(drained, 6),
            }
        },
    )


def _version() -> str:
    try:
        return version("hroot")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
