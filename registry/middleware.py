"""Cross-cutting parts of every response: the API version header, OCI errors, the access log."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.auth.middleware import CALLER
from registry.errors import http_error_response, internal_error_response, store_error_response
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
    """One line per request, after its body has been streamed (handlers stream inside):
    the client's address, its user, the request, the status, the time, the user agent."""
    start = time.perf_counter()
    outcome = "-"
    try:
        response = await handler(request)
        outcome = str(response.status)
        return response
    except BaseException as exc:  # only a client gone mid-body or a cancelled handler get here
        outcome = f"aborted ({type(exc).__name__})"
        raise
    finally:
        access_log.info(
            '%s %s "%s %s" %s %.3fs "%s"',
            request.remote,
            request.get(CALLER, "-"),  # a Caller once authentication ran, "-" without it
            request.method,
            request.raw_path,
            outcome,
            time.perf_counter() - start,
            request.headers.get("User-Agent", "-"),
        )
