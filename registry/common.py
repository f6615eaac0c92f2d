"""What every handler needs: the app's store and config, blocking calls off the loop, bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from registry.config import Config
from registry.errors import RequestTimeout
from registry.pools import Pools
from storage import Store
from storage.errors import StoreError

T = TypeVar("T")

STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", Config)
POOLS = web.AppKey("pools", Pools)

# Bodies move in pieces of this size: big enough to keep threads busy, small enough for memory.
PIECE = 1 << 20


def store(request: web.Request) -> Store:
    return request.app[STORE]


def config(request: web.Request) -> Config:
    return request.app[CONFIG]


async def blocking(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking store call for `request` off the event loop: a GET or HEAD in the
    reads pool, anything else in the writes pool within its repository's share
    (registry.pools)."""
    pools = request.app[POOLS]
    if request.method in ("GET", "HEAD"):
        return await pools.read(fn, *args)
    return await pools.write(fn, *args, repository=request.match_info.get("name"))


async def body_pieces(
    request: web.Request, error: type[StoreError], size: int = PIECE
) -> AsyncIterator[bytes]:
    """The request body in pieces of `size` bytes (the last may be shorter).

    A body that breaks off or is badly framed raises `error` (a 4xx), not a 500. One
    that sends nothing for `body_timeout` seconds raises RequestTimeout (408): a client
    trickling a byte now and then is served, a silent one stops costing a connection
    and its upload's lock. The wait is on the event loop, holding no thread.
    """
    timeout = config(request).body_timeout
    parts: list[bytes] = []
    have = 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.read(size - have)
        except (HttpProcessingError, ConnectionError) as exc:
            raise error(f"request body: {exc}") from exc
        except TimeoutError:
            raise RequestTimeout(f"no byte of the body for {timeout:g} s") from None
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
        if have == size:
            yield b"".join(parts)
            parts, have = [], 0
    if parts:
        yield b"".join(parts)


def ensure_room(request: web.Request) -> None:
    """507 before a body is read when its Content-Length would not leave the configured
    margin free on the registry's disk (a statvfs: cheap enough for the event loop)."""
    if request.content_length:
        store(request).ensure_room(request.content_length, config(request).min_free_bytes)
