"""The application factory: config and store in, a ready aiohttp application out."""

from __future__ import annotations

from aiohttp import web

from registry.common import CONFIG, STORE
from registry.config import Config
from registry.logs import quiet_client_garbage
from registry.middleware import add_api_version, handle_errors, log_access
from registry.routes import ROUTES
from storage import Store


def create_app(config: Config, store: Store | None = None) -> web.Application:
    """Build the app; without `store`, open (or create) the one at config.data and own it.

    A store passed in stays the caller's to close.
    """
    quiet_client_garbage()
    app = web.Application(middlewares=[log_access, handle_errors])
    app[CONFIG] = config
    if store is None:
        store = Store.open(config.data, create=True)
        app.on_cleanup.append(_close_store)
    app[STORE] = store
    app.on_response_prepare.append(add_api_version)
    app.add_routes(ROUTES)
    return app


async def _close_store(app: web.Application) -> None:
    app[STORE].close()
