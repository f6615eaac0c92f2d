"""/health and /ready (README "Monitoring"), for load balancers, orchestrators and people.

/health is liveness: the process answers, whatever state the store is in, so a restart is
never asked for because of a full disk. /ready says whether this registry should be sent
requests now: it opens the repository afresh and reads a branch tip (the app's own Store
caches what it read, so it would not see the objects go), looks at the free space, and for
a follower at how long ago its last good fetch was. 200 when every check passes, 503 with
the failing ones otherwise; JSON either way, never the OCI error format (they are no API
paths). Neither needs credentials: registry.auth lets every path outside /v2/, /git/ and
/ui/ through.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from dulwich.repo import Repo

from registry.common import CONFIG, POOLS, STORE
from registry.follow import FOLLOWER, Follower
from storage import names, space

STORE_SECONDS = 5.0  # a store that takes longer to read one commit (a hung mount) is not ready
NO_STORE = {"Cache-Control": "no-store"}

Check = dict[str, Any]  # {"ok": bool, "error": why, when not ok, and what was measured}


def setup(app: web.Application) -> None:
    app.router.add_routes(routes(app))


def routes(app: web.Application) -> list[web.RouteDef]:
    """/health and /ready of `app`: for `app` itself, or for a separate app on
    config.metrics_listen."""

    async def ready(request: web.Request) -> web.Response:
        checks = {"store": await _store_check(app), "disk": _disk_check(app)}
        if FOLLOWER in app:
            checks["follower"] = _follower_check(app[FOLLOWER], app[CONFIG].ready_follow_lag)
        failing = sorted(name for name, check in checks.items() if not check["ok"])
        body = {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}
        return web.json_response(body, status=503 if failing else 200, headers=NO_STORE)

    return [web.get("/health", health), web.get("/ready", ready)]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


def read_store(path: Path) -> int:
    """Open the repository at `path` as a new reader would, and read the tip commit of its
    first branch; how many branches it has."""
    with Repo(str(path)) as repo:
        branches = sorted(repo.refs.keys(base=names.BRANCH_PREFIX))
        if branches:
            repo.object_store[repo.refs[names.BRANCH_PREFIX + branches[0]]]
        return len(branches)


async def _store_check(app: web.Application) -> Check:
    try:
        async with asyncio.timeout(STORE_SECONDS):
            repositories = await app[POOLS].read(read_store, app[STORE].path)
    except TimeoutError:
        return {"ok": False, "error": f"reading the repository took over {STORE_SECONDS:g} s"}
    except Exception as e:  # whatever the repository's state, /ready answers
        return {"ok": False, "error": f"cannot read the repository: {_reason(e)}"}
    return {"ok": True, "repositories": repositories}


def _disk_check(app: web.Application) -> Check:
    needed = app[CONFIG].min_free_bytes
    try:
        free = space.free_bytes(app[STORE].path)
    except OSError as e:
        return {"ok": False, "error": f"cannot stat the repository's filesystem: {_reason(e)}"}
    check: Check = {"ok": free > needed, "free_bytes": free, "min_free_bytes": needed}
    if not check["ok"]:
        check["error"] = "the disk has no more than min_free_bytes free"
    return check


def _follower_check(follower: Follower, bound: float) -> Check:
    if follower.last_fetched is None:
        return {"ok": False, "error": "no fetch from the primary has succeeded yet"}
    lag = time.time() - follower.last_fetched
    check: Check = {"ok": lag <= bound, "lag_seconds": round(lag, 3), "max_lag_seconds": bound}
    if not check["ok"]:
        check["error"] = "the last good fetch from the primary is older than ready_follow_lag"
    return check


def _reason(error: BaseException) -> str:
    """Why, without the paths an exception's text names: /ready answers anyone."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
