"""GET /v2/_catalog."""

from __future__ import annotations

from aiohttp import web

from registry.common import store
from registry.paging import page


async def list_repositories(request: web.Request) -> web.Response:
    repositories, headers = await page(request, store(request).repositories)
    return web.json_response({"repositories": repositories}, headers=headers)
