"""The application factory: config and store in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from registry import events, follow, fsviews, health, housekeeping, limits, metrics, proxy, ui
from registry.auth import middleware as auth
from registry.common import CONFIG, POOLS, STORE
from registry.config import Config
from registry.logs import quiet_client_garbage
from registry.logs import setup as setup_logs
from registry.middleware import add_api_version, handle_errors, log_access
from registry.pools import Pools
from registry.routes import ROUTES
from storage import Store

log = logging.getLogger("hroot.registry")


def create_app(config: Config, store: Store | None = None) -> web.Application:
    """Build the app; without `store`, open (or create) the one at config.data and own it.
    With config.follow it is a read-only follower of that primary (registry.follow).

    A store passed in stays the caller's to close.
    """
    quiet_client_garbage()
    app = web.Application(middlewares=[log_access, handle_errors, auth.authenticate])
    app[CONFIG] = config
    app[POOLS] = Pools(config.read_threads, config.write_threads)
    owned = store is None
    if store is None:
        store = Store.open(config.data, create=True)
        if removed := store.remove_stale_locks():
            log.warning("removed %d stale ref lock file(s) left by a crash", removed)
    app[STORE] = store
    setup_logs(app)
    auth.setup(app, config, store.path)
    if config.follow is not None:
        follow.setup(app)
    proxy.setup(app)
    housekeeping.setup(app)
    limits.setup(app)
    events.setup(app)
    fsviews.setup(app)
    metrics.setup(app)  # after follow and events: it reports a follower's lag and webhooks
    health.setup(app)
    ui.setup(app)
    app.cleanup_ctx.append(_prepare_lineage)
    app.on_response_prepare.append(add_api_version)
    app.add_routes(ROUTES)
    app.on_cleanup.append(_shut_down if owned else _shut_down_pools)  # after every cleanup_ctx
    return app


async def _prepare_lineage(app: web.Application) -> AsyncIterator[None]:
    """Build the store's lineage index in the background while the server starts
    answering; wait for it on the way out, before the store closes."""
    pools = app[POOLS]
    building = asyncio.ensure_future(pools.background(app[STORE].prepare_lineage, pools.yielder()))
    building.add_done_callback(_log_failure)
    yield
    with contextlib.suppress(Exception):  # logged when it happened
        await building


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("building the lineage index failed", exc_info=done.exception())


async def _shut_down_pools(app: web.Application) -> None:
    app[POOLS].shutdown()


async def _shut_down(app: web.Application) -> None:
    await _shut_down_pools(app)
    app[STORE].close()
