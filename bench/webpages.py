"""Server time of hroot's web pages (registry.ui) on workload 6's registry: 10,000 tags in
one repository, 2,000 repositories. Each page says its server time in a `Server-Timing:
app;dur=MS` header; the target is under 300 ms a page. Distribution has no such pages."""

from __future__ import annotations

import re
import statistics

import aiohttp

SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")
WARM = 5  # views of a page after its first, of which the median counts


async def server_time(session: aiohttp.ClientSession, url: str) -> float:
    """Milliseconds the server says it spent on one page (which must be a 200)."""
    async with session.get(url) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status}")
        found = SERVER_TIMING.search(response.headers.get("Server-Timing", ""))
        if found is None:
            raise RuntimeError(f"GET {url}: no Server-Timing header")
        return float(found.group(1))


async def page_times(base: str, repo: str, other: str, middle: str, image: str) -> dict[str, float]:
    """The first view of each page (after the restart a round begins with: nothing cached
    but what the API requests before it read) and the median of the next WARM views.
    `other` is a repository on a later page of the list; `middle` and `image` are tags of
    `repo`: where a later page of its tags begins, and the one whose image page is timed."""
    pages = {
        "repository list": "/ui/",
        f"repository list after {other}": f"/ui/?n=100&last={other}",
        f"tags of {repo}": f"/ui/r/{repo}",
        f"tags of {repo} after {middle}": f"/ui/r/{repo}?n=100&last={middle}",
        f"history of {repo}": f"/ui/r/{repo}/-/history",
        f"image {repo}:{image}": f"/ui/r/{repo}/-/i/{image}",
        f"diff {repo}:{middle} {image}": f"/ui/r/{repo}/-/diff?a={middle}&b={image}",
    }
    metrics: dict[str, float] = {}
    async with aiohttp.ClientSession(base) as session:
        for what, path in pages.items():
            metrics[f"web page {what}, first (ms server)"] = await server_time(session, path)
            warm = [await server_time(session, path) for _ in range(WARM)]
            metrics[f"web page {what} (ms server)"] = statistics.median(warm)
    return metrics
