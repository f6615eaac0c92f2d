"""GET /v2/<name>/tags/list: stored tags, or an upstream's for a name it covers."""

from __future__ import annotations

from aiohttp import web

from registry.common import store
from registry.paging import page
from registry.proxy import proxy_of


async def list_tags(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if (cache := proxy_of(request, name)) is not None:
        tags, headers = await page(request, _after, await cache.tags(name))
    else:
        tags, headers = await page(request, store(request).tags, name)
    return web.json_response({"name": name, "tags": tags}, headers=headers)


def _after(tags: list[str], n: int, last: str | None) -> list[str]:
    """At most `n` of the sorted `tags` after `last`."""
    return [tag for tag in tags if last is None or tag > last][:n]
