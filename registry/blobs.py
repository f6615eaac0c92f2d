"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: blobs streamed out of the store, with byte ranges."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import suppress

from aiohttp import web

from registry.common import PIECE, blocking, store
from registry.errors import RangeNotSatisfiable
from registry.proxy import proxy_of
from storage import BlobReader

log = logging.getLogger("hroot.registry")

# One range of RFC 9110 (`bytes=a-b`, `bytes=a-`, `bytes=-n`); 19 digits keep int() cheap.
RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """First and last byte asked for by a Range header, clamped to the blob; None without one.

    Anything we cannot serve (bad syntax, other units, several ranges, past the end) raises
    RangeNotSatisfiable, which answers 416 with `Content-Range: bytes */size` as Go's
    http.ServeContent (and so Distribution) does.
    """
    if header is None:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        raise RangeNotSatisfiable(size, f"unsupported Range {header!r}")
    first, last = match.groups()
    if first == "":
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size, f"empty suffix range {header!r}")
        return max(size - int(last), 0), size - 1
    start = int(first)
    if start >= size or (last != "" and int(last) < start):
        raise RangeNotSatisfiable(size, f"range {header!r} outside a blob of {size} bytes")
    return start, size - 1 if last == "" else min(int(last), size - 1)


async def get_blob(request: web.Request) -> web.StreamResponse:
    """GET and HEAD: 200 (or 206 for a Range) streaming the blob in PIECE-sized reads.

    A GET opens the blob once: the open reader knows the size a Range is checked against.
    """
    name, digest = request.match_info["name"], request.match_info["digest"]
    if (cache := proxy_of(request, name)) is not None:
        streamed = await cache.blob(request, name, digest)
        if streamed is not None:  # else it is stored now: served from the store below
            return streamed
    st = store(request)
    reader = (
        None if request.method == "HEAD" else await blocking(request, st.open_blob, name, digest)
    )
    try:
        size = (
            reader.size
            if reader is not None
            else (await blocking(request, st.stat_blob, name, digest)).size
        )
        span = parse_range(request.headers.get("Range"), size)
        response = web.StreamResponse(
            status=200 if span is None else 206,
            headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": digest,
                "Accept-Ranges": "bytes",
                "ETag": f'"{digest}"',
            },
        )
        start, end = span or (0, size - 1)
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.content_length = end - start + 1
        if reader is None or response.content_length == 0:
            return response
        await blocking(request, reader.skip, start)
        await response.prepare(request)
        await _send(request, response, reader, response.content_length)
        await response.write_eof()
    except ConnectionError as exc:
        log.info("client left during GET %s: %s", request.path, exc)
    finally:
        if reader is not None:
            await blocking(request, reader.close)
    return response


async def _send(
    request: web.Request, response: web.StreamResponse, reader: BlobReader, length: int
) -> None:
    """Write `length` bytes from reader, reading piece k+1 while piece k goes out."""
    reading = asyncio.ensure_future(blocking(request, reader.read, min(PIECE, length)))
    try:
        while length > 0:
            piece = await reading
            if not piece:
                raise RuntimeError(f"blob ended {length} bytes before its size")
            length -= len(piece)
            if length > 0:
                reading = asyncio.ensure_future(blocking(request, reader.read, min(PIECE, length)))
            await response.write(piece)
    finally:
        # On a failed write, let the read in flight end before the reader is closed.
        with suppress(Exception):
            await reading


async def delete_blob(request: web.Request) -> web.Response:
    """202: the blob leaves the repository (git keeps it while another commit holds it)."""
    await blocking(
        request,
        store(request).delete_blob,
        request.match_info["name"],
        request.match_info["digest"],
    )
    return web.Response(status=202)
