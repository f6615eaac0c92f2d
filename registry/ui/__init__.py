"""The web pages under /ui/: what the registry holds, for people, read-only.

Server-rendered HTML from Jinja2 templates (autoescaped: names, tags, labels and
annotations are user data), no JavaScript. The pages show only repositories the caller
may pull, and answer a hidden one exactly as an unknown one. Their errors are HTML pages
too, and every answer says its server time in a `Server-Timing` header, which the
benchmark reads.
"""

from __future__ import annotations

from aiohttp import web

from registry.middleware import handle_errors
from registry.ui import pages, reads


def setup(app: web.Application) -> None:
    """Add the pages' routes, and their error pages around the API's error handling (so
    that a refused login or an unknown page under /ui/ answers in HTML)."""
    app[pages.TEMPLATES] = pages.environment()
    app[pages.SIZES] = reads.Sizes()
    app.middlewares.insert(app.middlewares.index(handle_errors), pages.html_errors)
    app.add_routes(pages.ROUTES)
