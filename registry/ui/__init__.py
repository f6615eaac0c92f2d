"""The web pages under /ui/: what the registry holds, for people, read-only.

Server-rendered HTML from Jinja2 templates (autoescaped: names, tags, labels and
annotations are user data), no JavaScript. The pages show only repositories the caller
may pull, and answer a hidden one exactly as an unknown one. Their errors are HTML pages
too, and every answer says its server time in a `Server-Timing` header, which the
benchmark reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from registry.middleware import handle_errors
from registry.ui import pages, reads


def setup(app: web.Application) -> None:
    """Add the pages' routes, and their error pages around the API's error handling (so
    that a refused login or an unknown page under /ui/ answers in HTML)."""
    app[pages.TEMPLATES] = pages.environment()
    app[pages.SIZES] = reads.Sizes()
    app[pages.PUSH_TIMES] = reads.PushTimes()
    app.middlewares.insert(app.middlewares.index(handle_errors), pages.html_errors)
    app.add_routes(pages.ROUTES)
    app.cleanup_ctx.append(_background_reads)


async def _background_reads(app: web.Application) -> AsyncIterator[None]:
    """On the way out, let a count of sizes or a read of push times under way end before
    the store closes: their threads read it until then."""
    yield
    with contextlib.suppress(Exception):  # logged when it happened
        await asyncio.gather(app[pages.SIZES].wait(), app[pages.PUSH_TIMES].wait())
