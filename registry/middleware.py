"""Cross-cutting parts of every response: the API version header, OCI errors, the access log."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.auth.middleware import CALLER
from registry.errors import http_error_response, internal_error_response, store_error_response
from registry.logs import IN_FLIGHT, client_name, logged_path
from storage.errors import RefBusy, StorageFull, StoreError

log = logging.getLogger("hroot.registry")
access_log = logging.getLogger("hroot.access")

# Headers of every answer, errors included: clients check the API version on each; the
# server is named hroot only, not by the versions of Python and aiohttp it runs on.
HEADERS = {"Docker-Distribution-API-Version": "registry/2.0", "Server": "hroot"}


async def add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: HEADERS on every answer of the app (registry.server adds
    them to the answers aiohttp makes before the app sees a request)."""
    response.headers.update(HEADERS)


def _body_started(request: web.Request) -> bool:
    """True once response bytes went out: then only closing the connection can signal an error."""
    return request.writer.output_size > 0


@web.middleware
async def handle_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into an OCI JSON error; unexpected ones are logged with traceback."""
    try:
        return await handler(request)
    except StoreError as err:
        if _body_started(request):
            raise
        response = store_error_response(err, request)
        if isinstance(err, StorageFull | RefBusy):  # the operator's to see: one line
            what = "disk full" if isinstance(err, StorageFull) else "ref lock held too long"
            log.warning("%s on %s %s: %s", what, request.method, request.raw_path, err)
        elif response.status >= 500:  # a store error without a mapped status is a bug somewhere
            log.error(
                "unmapped store error on %s %s", request.method, request.raw_path, exc_info=err
            )
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except Exception:
        if _body_started(request):
            raise  # aiohttp logs it and drops the connection: the client sees a short body
        log.exception("internal error on %s %s", request.method, request.raw_path)
        return internal_error_response()


@web.middleware
async def log_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request, after its body has been streamed (handlers stream inside);
    and the count of requests in flight, for the shutdown lines."""
    in_flight = request.app[IN_FLIGHT]
    in_flight.begin()
    start = time.perf_counter()
    response: web.StreamResponse | None = None
    status: int | None = None
    aborted: str | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect or the like; aiohttp sends it
        status = exc.status
        raise
    except BaseException as exc:  # only a client gone mid-body or a cancelled handler get here
        aborted = type(exc).__name__
        raise
    finally:
        in_flight.end()
        if access_log.isEnabledFor(logging.INFO):
            seconds = time.perf_counter() - start
            _log_request(request, response, status, aborted, seconds)


def _bytes_out(request: web.Request, response: web.StreamResponse | None) -> int:
    """Bytes of the answer, as registry.metrics counts them: a streamed answer went out
    through the request's writer (its head included); any other goes out after the
    middlewares, as the body it holds (none for HEAD)."""
    if response is None or response.prepared:
        return request.writer.output_size
    if request.method == "HEAD" or not isinstance(response, web.Response):
        return 0
    return response.content_length or 0


def _log_request(
    request: web.Request,
    response: web.StreamResponse | None,
    status: int | None,
    aborted: str | None,
    seconds: float,
) -> None:
    match = request.match_info
    resource = match.route.resource
    caller = request.get(CALLER)  # a Caller once authentication ran; none without it
    user = str(caller) if caller is not None else None
    path = logged_path(request.raw_path)
    bytes_in = request.content.total_bytes  # the body's bytes, as they came in
    bytes_out = _bytes_out(request, response)
    client = client_name(request.headers.get("User-Agent"))
    outcome = str(status) if aborted is None else f"aborted ({aborted})"
    access_log.info(
        '%s %s "%s %s" %s in=%d out=%d %.3fs %s',
        request.remote,
        user or "-",
        request.method,
        path,
        outcome,
        bytes_in,
        bytes_out,
        seconds,
        client,
        extra={
            "fields": {
                "event": "request",
                "remote": request.remote,
                "user": user,
                "method": request.method,
                "route": resource.canonical if resource is not None else None,
                "path": path,
                "repository": match.get("name"),
                "reference": match.get("reference"),
                "digest": match.get("digest")
                or request.query.get("digest")
                or request.query.get("mount"),
                "status": status,
                "aborted": aborted,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "seconds": round(seconds, 6),
                "client": client,
            }
        },
    )
