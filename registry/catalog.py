"""GET /v2/_catalog: the repositories the caller may pull (all of them without auth)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from aiohttp import web

from registry.auth.middleware import shown
from registry.common import store
from registry.paging import page
from storage import Store


async def list_repositories(request: web.Request) -> web.Response:
    # The store sorts every name for any page anyway: filtering them adds little.
    listing = partial(_shown, store(request), partial(shown, request))
    repositories, headers = await page(request, listing)
    return web.json_response({"repositories": repositories}, headers=headers)


def _shown(st: Store, visible: Callable[[str], bool], n: int, last: str | None) -> list[str]:
    """At most `n` repositories after `last` that `visible` lets through."""
    return [name for name in st.repositories(last=last) if visible(name)][:n]
