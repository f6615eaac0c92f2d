"""A pull-through proxy whose cache is git history (README "Pull-through proxy").

Names that an upstream of the config covers (registry.upstreams) are read-only here:
pulls of what is not stored yet go to that upstream (registry.proxy.cache), pushes and
deletes are refused. Every other name is local and never goes upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.common import CONFIG, POOLS, STORE
from registry.proxy.cache import Proxy
from storage.errors import Denied

PROXY = web.AppKey("proxy", Proxy)


def setup(app: web.Application) -> None:
    """Make `app` a pull-through proxy of its config's upstreams, if it has any."""
    config = app[CONFIG]
    if not config.upstream:
        return
    app[PROXY] = Proxy(config.upstream, app[STORE], app[POOLS], config.max_manifest_size)
    app.middlewares.append(read_only)
    app.cleanup_ctx.append(_proxying)


async def _proxying(app: web.Application) -> AsyncIterator[None]:
    await app[PROXY].start()
    yield
    await app[PROXY].close()


def proxy_of(request: web.Request, name: str) -> Proxy | None:
    """The proxy that serves repository `name`, if it is an upstream's."""
    proxy = request.app.get(PROXY)
    return proxy if proxy is not None and proxy.upstream_of(name) is not None else None


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """DENIED for a write to an upstream's name, before a byte of it is read."""
    name = request.match_info.get("name")
    upstream = request.app[PROXY].upstream_of(name) if name else None
    if upstream is not None and request.method not in ("GET", "HEAD"):
        raise Denied(
            f"{request.method} {request.path}",
            message=f"{name} is a read-only cache of {upstream}: push to a name of your own",
        )
    return await handler(request)
