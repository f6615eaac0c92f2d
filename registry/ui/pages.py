"""The handlers of the web pages: each asks the store (in the read pool) for what `hroot
ls/log/show/diff` read, keeps what the caller may see, and renders one template."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from registry.auth.middleware import may, shown
from registry.common import POOLS, blocking, store
from registry.errors import PaginationNumberInvalid
from registry.formats import config_lines, short, signed_size, size, value, when
from registry.paging import NUMBER, page_size
from registry.ui import graph, reads
from storage.errors import NameUnknown, Unsupported

TEMPLATES = web.AppKey("ui_templates", jinja2.Environment)
SIZES = web.AppKey("ui_sizes", reads.Sizes)
PUSH_TIMES = web.AppKey("ui_push_times", reads.PushTimes)
PREFIX = "/ui/"
PAGE = 100  # rows of a page when `n` does not say
HISTORY_PAGE = 50  # commits of a history page: each is a row of the graph
FILES_SHOWN = 1000  # files of a diff listed on its page; `hroot diff` lists them all
SHARED_SHOWN = 10  # repositories named beside a layer that others share: a base may be in 2,000


def environment() -> jinja2.Environment:
    """The templates, autoescaped whatever their name, with the command line's formats."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("registry.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=size, signed_size=signed_size, short=short, when=when, value=value)
    env.globals["shared_shown"] = SHARED_SHOWN
    env.globals["files_shown"] = FILES_SHOWN
    env.globals["config_lines"] = config_lines  # what `hroot diff` says of two configs
    return env


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    page = request.app[TEMPLATES].get_template(template).render(**context)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Around the API's error handling, for /ui/ only: its JSON errors become HTML pages of
    the same status and headers (a 401 keeps its Basic challenge; a page's own HTML stays as
    it is); every answer gets the server time it took, auth included, as
    `Server-Timing: app;dur=MILLISECONDS`."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    start = time.perf_counter()
    response = await handler(request)
    if response.status >= 400 and response.content_type == "application/json":
        response = _error_page(request, response)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
    return response


def _error_page(request: web.Request, error: web.StreamResponse) -> web.Response:
    body = error.body if isinstance(error, web.Response) else b""
    try:
        (found,) = json.loads(body)["errors"]  # type: ignore[arg-type]
        message, detail = str(found["message"]), found.get("detail")
    except (ValueError, KeyError, TypeError):
        message, detail = error.reason or "error", None
    page = render(
        request,
        "error.html",
        status=error.status,
        title=f"{error.status} {error.reason}",
        message=message,
        detail=detail if isinstance(detail, str) else None,
    )
    for header in ("WWW-Authenticate", "Allow"):
        if header in error.headers:
            page.headers[header] = error.headers[header]
    return page


def _page_size(request: web.Request, default: int) -> int:
    """`n`, or `default` without it; capped as the API's pages are (max_page_size)."""
    return page_size(request) if request.query.get("n") else default


def _visible(request: web.Request) -> str:
    """The repository of the path, if the caller may pull it; else NameUnknown, as for
    one that does not exist, so that a page never tells a hidden repository is there."""
    name = request.match_info["name"]
    if not may(request, "pull", name):
        raise NameUnknown(name)
    return name


async def repositories(request: web.Request) -> web.Response:
    """/ui/: the repositories the caller may see, a page at a time, with their sizes."""
    n = _page_size(request, PAGE)
    last = request.query.get("last") or None
    names = await blocking(request, store(request).repositories)
    visible = [name for name in names if shown(request, name)]
    sizes = request.app[SIZES]
    pools = request.app[POOLS]
    sizes.refresh(partial(pools.background, store(request).usage, pools.yielder()))
    found = await blocking(
        request, reads.repositories, store(request), visible, n, last, sizes.usage
    )
    return render(
        request, "repositories.html", page=found, total=len(visible), n=n, counted=sizes.counted
    )


async def repository(request: web.Request) -> web.Response:
    """/ui/r/NAME: its tags, a page at a time, with digest, size, platforms, when pushed."""
    name = _visible(request)
    n = _page_size(request, PAGE)
    last = request.query.get("last") or None
    found = await blocking(request, reads.tags, store(request), name, n, last)
    if found.pushes_pending:
        pools = request.app[POOLS]
        read = partial(pools.background, store(request).pushes, name)
        request.app[PUSH_TIMES].read(name, read)
    return render(request, "repository.html", name=name, page=found, n=n)


async def image(request: web.Request) -> web.Response:
    """/ui/r/NAME/-/i/TAG-or-DIGEST: one image, as `hroot show` says it, sharing included."""
    name = _visible(request)
    reference = request.match_info["reference"]
    others = [o for o in await blocking(request, store(request).repositories) if shown(request, o)]
    found = await blocking(request, reads.image, store(request), name, reference, others)
    return render(
        request,
        "image.html",
        name=name,
        page=found,
        bases=[(base, shown(request, base.repository)) for base in found.image.bases],
    )


async def history(request: web.Request) -> web.Response:
    """/ui/r/NAME/-/history: its own commits as a graph, with lineage edges to the images
    it was built on, a page of commits at a time (`skip`)."""
    name = _visible(request)
    n = _page_size(request, HISTORY_PAGE)
    skip = _number(request, "skip")
    entries = await blocking(request, store(request).commit_log, name, skip, n + 1)
    drawn = graph.draw(entries[:n], partial(shown, request))
    return render(
        request,
        "history.html",
        name=name,
        graph=drawn,
        n=n,
        skip=skip,
        older=skip + n if len(entries) > n else None,
    )


async def diff(request: web.Request) -> web.Response:
    """/ui/r/NAME/-/diff?a=TAG&b=TAG: what `hroot diff NAME:A NAME:B` says; a form without."""
    name = _visible(request)
    a, b = request.query.get("a", ""), request.query.get("b", "")
    platform = request.query.get("platform") or None
    found, problem = None, None
    if a and b:
        try:
            found = await blocking(request, store(request).diff, (name, a), (name, b), platform)
        except Unsupported as e:  # an index without a platform: the form asks for one
            problem = e.message
    return render(
        request,
        "diff.html",
        status=400 if problem else 200,
        problem=problem,
        name=name,
        a=a,
        b=b,
        platform=platform or "",
        diff=found,
    )


def _number(request: web.Request, key: str) -> int:
    text = request.query.get(key, "0") or "0"
    if NUMBER.fullmatch(text) is None:
        raise PaginationNumberInvalid(f"{key}={text!r} is not a non-negative integer")
    return int(text)


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound(PREFIX)


# Repository names hold slashes, so the name is greedy, and the pages' own words follow a
# `/-/` that no name can hold (each part of a name begins with a letter or digit): the
# repository `app/history` is not the history of `app`.
ROUTES: list[web.RouteDef] = [
    web.get("/ui", to_index),
    web.get(PREFIX, repositories),
    web.get(PREFIX + "r/{name:.+}/-/i/{reference}", image),
    web.get(PREFIX + "r/{name:.+}/-/history", history),
    web.get(PREFIX + "r/{name:.+}/-/diff", diff),
    web.get(PREFIX + "r/{name:.+}", repository),
]
