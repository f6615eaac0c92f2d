"""/v2/<name>/blobs/uploads/…: monolithic, chunked and streamed blob uploads, and mounts.

Bodies never sit in memory whole: they go to the store's UploadWriter in PIECE-sized pieces,
each written in a thread while the next one is received.

A session lives config.upload_lifetime seconds at most (the store forgets it then) and
counts against its client's max_uploads_per_client until it ends (registry.limits).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from registry.auth.middleware import may
from registry.common import blocking, body_pieces, config, ensure_room, store
from registry.errors import upload_range
from registry.limits import sessions
from storage import BlobInfo
from storage.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    SizeInvalid,
    StoreError,
)

T = TypeVar("T")

# `a-b` as the spec writes it; `bytes a-b/total` (RFC 9110) and `bytes=a-b` as some clients do.
CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")


def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    """What docker and skopeo need on every 202/204 of an upload session."""
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Docker-Upload-UUID": upload_id,
        "Range": upload_range(size),
    }


def _blob_created(name: str, info: BlobInfo) -> web.Response:
    """201 for a finished upload or a mount; containerd requires Docker-Content-Digest."""
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{info.digest}",
            "Docker-Content-Digest": info.digest,
        },
    )


def _chunk_offset(request: web.Request) -> int | None:
    """Where the chunk says it starts (Content-Range), checked against Content-Length."""
    header = request.headers.get("Content-Range")
    if header is None:
        return None
    match = CONTENT_RANGE.fullmatch(header.strip())
    if match is None or int(match[1]) > int(match[2]):
        raise BlobUploadInvalid(f"malformed Content-Range {header!r}")
    start, end = int(match[1]), int(match[2])
    if request.content_length is not None and request.content_length != end - start + 1:
        raise SizeInvalid(f"Content-Range {header!r} but Content-Length {request.content_length}")
    return start


async def _write_body(request: web.Request, write: Callable[[bytes], None]) -> None:
    """Stream the body into the blocking `write`, receiving piece k+1 while piece k is written."""
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writing.set_result(None)
    try:
        async for piece in body_pieces(request, BlobUploadInvalid):
            await writing
            writing = asyncio.ensure_future(blocking(request, write, piece))
        await writing
    finally:
        # On failure, let a write still in its thread end before the writer is closed.
        with suppress(Exception):
            await writing


async def _in_session(
    request: web.Request, fn: Callable[..., T], name: str, upload_id: str, *args: Any
) -> T:
    """`fn(name, upload_id, *args, upload_lifetime)`, a store call on a session, in a thread.

    A session the store no longer knows (expired, or removed by gc) stops counting
    against its client; an id used under another repository leaves its own session be.
    """
    lifetime = config(request).upload_lifetime
    try:
        return await blocking(request, fn, name, upload_id, *args, lifetime)
    except BlobUploadUnknown:
        sessions(request).close(name, upload_id)
        raise


async def _receive(request: web.Request, name: str, upload_id: str, offset: int | None) -> int:
    """Append the request body to the upload; the upload's size afterwards."""
    ensure_room(request)
    writer = await _in_session(
        request, store(request).open_upload, name, upload_id, offset, request.content_length
    )
    try:
        await _write_body(request, writer.write)
    finally:
        await blocking(request, writer.close)
    return writer.size


async def _discard(request: web.Request, name: str, upload_id: str) -> None:
    """Drop an upload that failed to complete (as Distribution does), so no spool file lingers."""
    with suppress(StoreError):
        await blocking(request, store(request).cancel_upload, name, upload_id)


async def start_upload(request: web.Request) -> web.Response:
    """POST: a mount (201), a whole blob with ?digest= (201), or a new session (202)."""
    name, query, st = request.match_info["name"], request.query, store(request)
    # A mount from a repository the caller may not pull is an upload, as with Distribution.
    if "mount" in query and "from" in query and may(request, "pull", query["from"]):
        info = await blocking(request, st.mount_blob, name, query["mount"], query["from"])
        if info is not None:
            return _blob_created(name, info)
    upload_id = await sessions(request).open(
        request.remote or "-", name, partial(blocking, request, st.start_upload, name)
    )
    # After a mount that found nothing the client uploads next, whatever else the query holds.
    if "digest" not in query or "mount" in query:
        return web.Response(status=202, headers=_upload_headers(name, upload_id, 0))
    try:
        await _receive(request, name, upload_id, None)
        info = await _in_session(request, st.finish_upload, name, upload_id, query["digest"])
    except BaseException:  # also when the client leaves: nobody else knows this upload's id
        await _discard(request, name, upload_id)
        raise
    finally:
        sessions(request).close(name, upload_id)
    return _blob_created(name, info)


async def upload_status(request: web.Request) -> web.Response:
    """GET: 204 with how much arrived, so a client can resume after a 416 or a broken PATCH."""
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    size = await _in_session(request, store(request).upload_size, name, upload_id)
    return web.Response(status=204, headers=_upload_headers(name, upload_id, size))


async def append_chunk(request: web.Request) -> web.Response:
    """PATCH: one chunk with Content-Range (416 unless it starts at the end), or one stream."""
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    size = await _receive(request, name, upload_id, _chunk_offset(request))
    return web.Response(status=202, headers=_upload_headers(name, upload_id, size))


async def finish_upload(request: web.Request) -> web.Response:
    """PUT ?digest=: append the last chunk if there is one, then check the digest and stage."""
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    digest = request.query.get("digest")
    if not digest:
        raise DigestInvalid(message="the digest query parameter is required")
    if request.body_exists:
        await _receive(request, name, upload_id, _chunk_offset(request))
    try:
        info = await _in_session(request, store(request).finish_upload, name, upload_id, digest)
    except StoreError:
        await _discard(request, name, upload_id)
        raise
    finally:  # finished or not, the store has ended the session
        sessions(request).close(name, upload_id)
    return _blob_created(name, info)


async def cancel_upload(request: web.Request) -> web.Response:
    """DELETE: 204, the session and what it received are gone."""
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    await _in_session(request, store(request).cancel_upload, name, upload_id)
    sessions(request).close(name, upload_id)
    return web.Response(status=204)
