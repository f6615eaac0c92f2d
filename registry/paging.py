"""`?n=&last=` paging shared by tags/list and _catalog, with the spec's `Link: <…>; rel="next"`."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from registry.common import blocking, config
from registry.errors import PaginationNumberInvalid

NUMBER = re.compile(r"[0-9]{1,19}")


def page_size(request: web.Request) -> int:
    """`n`, capped at max_page_size (also the size when absent or empty): clients follow Link."""
    cap = config(request).max_page_size
    n = request.query.get("n", "")
    if n == "":
        return cap
    if NUMBER.fullmatch(n) is None:
        raise PaginationNumberInvalid(f"n={n!r} is not a non-negative integer")
    return min(int(n), cap)


async def page(
    request: web.Request, listing: Callable[..., list[str]], *args: Any
) -> tuple[list[str], dict[str, str]]:
    """Call `listing(*args, n=, last=)` for one page, and the Link header when more remain.

    Asks for one item more than the page holds: that is how it knows whether more remain.
    """
    n = page_size(request)
    last = request.query.get("last") or None
    items = await blocking(request, partial(listing, *args, n=n + 1, last=last))
    headers = {}
    if n > 0 and len(items) > n:
        query = urlencode({"n": n, "last": items[n - 1]})
        headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return items[:n], headers
