"""GET /v2/: the endpoint every client probes first."""

from __future__ import annotations

from aiohttp import web


async def check(request: web.Request) -> web.Response:
    """200 {} tells clients this speaks the v2 API and needs no login."""
    return web.json_response({})
