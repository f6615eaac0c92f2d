"""Fixtures of the in-process API tests: the real app over a real Store in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from registry.app import create_app
from registry.config import Config
from storage import Store
from tests.api.helpers import Api


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "hroot.git")
    yield store
    store.close()


@pytest.fixture
def make_api(aiohttp_client: AiohttpClient, store: Store) -> Callable[..., Awaitable[Api]]:
    """An Api over an app with Config settings changed, e.g. make_api(max_page_size=2)."""

    async def make(**settings: Any) -> Api:
        config = Config(data=store.path, **settings)
        return Api(await aiohttp_client(create_app(config, store)))

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_api()


@pytest.fixture(params=[False, True], ids=["run_app-default", "handler-cancellation"])
async def served(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of the app on a real socket, with handlers left running when a client
    leaves (run_app's default) or cancelled then (what aiohttp's TestServer does)."""
    runner = web.AppRunner(
        create_app(Config(data=store.path), store), handler_cancellation=request.param
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][:2]
    await runner.cleanup()
