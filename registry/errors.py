"""The one place where OCI errors become HTTP: status codes, headers and the JSON error body.

Store errors are mapped by class (the nearest class in the MRO wins). The few errors only the
HTTP side can detect are StoreError subclasses too, so every OCI error is rendered by one path.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from storage import errors as e
from storage.errors import StoreError

UNKNOWN_STATUS = 500


class PaginationNumberInvalid(StoreError):
    """`n` of tags/list or _catalog is not a non-negative integer (Distribution's code)."""

    code = "PAGINATION_NUMBER_INVALID"
    message = "invalid number of results requested"


class RangeNotSatisfiable(StoreError):
    """A blob Range header we cannot serve; `size` goes into `Content-Range: bytes */size`."""

    code = "RANGE_INVALID"
    message = "requested range not satisfiable"

    def __init__(self, size: int, detail: Any = None) -> None:
        self.size = size
        super().__init__(detail)


class GitRequestFailed(StoreError):
    """A request to /git/ that `git upload-pack` (or its body) failed before any answer went out.

    Mostly the client's doing (a want it may not have, a malformed request), hence 400.
    """

    code = "UNKNOWN"
    message = "the git request failed"


class Unauthorized(StoreError):
    """No credentials, wrong ones, or a token that does not cover the request (401).

    `challenge` is the WWW-Authenticate header telling the client how to authenticate.
    """

    code = "UNAUTHORIZED"
    message = "authentication required"

    def __init__(self, challenge: str, detail: Any = None, message: str | None = None) -> None:
        self.challenge = challenge
        super().__init__(detail, message=message)


class TokenRequestInvalid(StoreError):
    """A request to the token endpoint that is malformed or asks what it cannot give (400)."""

    code = "UNSUPPORTED"
    message = "malformed token request"


class UpstreamFailed(StoreError):
    """The upstream registry of a proxied repository failed, refused hroot's credentials,
    or sent what it should not (502); the message names it."""

    code = "UNKNOWN"
    message = "the upstream registry failed"


class UpstreamTimeout(UpstreamFailed):
    """The upstream registry did not answer in time (504)."""

    message = "the upstream registry did not answer in time"


class TooManyRequests(StoreError):
    """A client over one of the registry's limits (429): it may try again later."""

    code = "TOOMANYREQUESTS"
    message = "too many requests"


class RequestTimeout(StoreError):
    """A request body that sent nothing for longer than the configured body timeout (408)."""

    code = "UNKNOWN"
    message = "the request body stalled"


STATUS: dict[type[StoreError], int] = {
    e.NameInvalid: 400,
    e.NameUnknown: 404,
    e.TagInvalid: 400,
    e.DigestInvalid: 400,
    e.SizeInvalid: 400,
    e.BlobUnknown: 404,
    e.BlobUploadUnknown: 404,
    e.BlobUploadInvalid: 400,
    e.UploadOutOfOrder: 416,
    e.ManifestInvalid: 400,
    e.ManifestTooLarge: 413,
    e.ManifestUnknown: 404,
    e.ManifestBlobUnknown: 400,
    e.Unsupported: 415,
    e.Denied: 403,
    e.StorageFull: 507,
    e.RefBusy: 503,  # Insufficient Storage (RFC 4918): the client can tell it from a bug
    PaginationNumberInvalid: 400,
    RangeNotSatisfiable: 416,
    GitRequestFailed: 400,
    Unauthorized: 401,
    TokenRequestInvalid: 400,
    TooManyRequests: 429,
    RequestTimeout: 408,
    UpstreamFailed: 502,
    UpstreamTimeout: 504,
}

# Errors aiohttp itself raises (no route, wrong method): the OCI code each is reported as.
HTTP_CODES: dict[int, tuple[str, str]] = {
    404: ("NOT_FOUND", "no such endpoint"),
    405: ("UNSUPPORTED", "method not allowed on this endpoint"),
}


def upload_range(size: int) -> str:
    """An upload's Range: `0-<last byte>`, no `bytes=`, and `0-0` when empty (as Distribution)."""
    return f"0-{max(size - 1, 0)}"


def status_of(err: StoreError) -> int:
    """HTTP status of a store error: that of its nearest class in STATUS."""
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return UNKNOWN_STATUS


def json_error(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
    reason: str | None = None,
) -> web.Response:
    """The distribution spec's error body: {"errors": [{"code", "message", "detail"}]}."""
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return web.Response(
        status=status,
        reason=reason,
        text=json.dumps(body, default=str),
        content_type="application/json",
        headers=headers,
    )


def store_error_response(err: StoreError, request: web.Request) -> web.Response:
    """Render a StoreError, with the headers the spec asks for on 416s."""
    headers: dict[str, str] = {}
    if isinstance(err, e.UploadOutOfOrder):
        headers = {"Range": upload_range(err.size), "Location": request.path}
    elif isinstance(err, RangeNotSatisfiable):
        headers = {"Content-Range": f"bytes */{err.size}"}
    elif isinstance(err, Unauthorized):
        headers = {"WWW-Authenticate": err.challenge}
    # Some clients print only the status line of a failed upload (skopeo: "received
    # unexpected HTTP status: 507 Insufficient Storage"): for a full disk it says why.
    reason = f"Insufficient Storage ({err.message})" if isinstance(err, e.StorageFull) else None
    return json_error(status_of(err), err.code, err.message, err.detail, headers, reason)


def http_error_response(exc: web.HTTPException) -> web.Response:
    """Render an error aiohttp raised (404 no route, 405 wrong method …), keeping `Allow`."""
    code, message = HTTP_CODES.get(exc.status, ("UNKNOWN", exc.reason))
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_error(exc.status, code, message, headers=headers)


def internal_error_response() -> web.Response:
    """A 500 that says nothing of the internals; the traceback goes to the log instead."""
    return json_error(UNKNOWN_STATUS, "UNKNOWN", "internal server error")
