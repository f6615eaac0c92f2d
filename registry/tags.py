"""GET /v2/<name>/tags/list."""

from __future__ import annotations

from aiohttp import web

from registry.common import store
from registry.paging import page


async def list_tags(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    tags, headers = await page(request, store(request).tags, name)
    return web.json_response({"name": name, "tags": tags}, headers=headers)
