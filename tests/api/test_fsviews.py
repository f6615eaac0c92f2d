"""Filesystem views kept by a running app (registry.fsviews): built after pushes, off
the push path, for the repositories the `fs_view` setting names."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from registry.config import ConfigError, load_config
from storage import Store
from tests.api.helpers import Api
from tests.storage.images import tar_of

MakeApi = Callable[..., Awaitable[Api]]


def git(store: Store, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(store.path), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def view_moves(store: Store, repo: str, past: str | None, timeout: float = 10) -> str:
    """The commit of repo's view once it is not `past` any more."""
    async with asyncio.timeout(timeout):
        while (commit := store.fs_view_commit(repo)) == past:
            await asyncio.sleep(0.05)
    assert commit is not None
    return commit


async def test_a_push_gets_its_view_within_seconds(make_api: MakeApi, store: Store) -> None:
    api = await make_api(fs_view=("app", "team/*"))
    await api.push_image("app", "v1", (tar_of({"etc/x": b"one\n", "etc/y": b"y"}),))
    await view_moves(store, "app", None)
    await api.push_image("app", "v2", (tar_of({"etc/x": b"two\n", "etc/y": b"y"}),))
    await api.push_image("app", "v3", (tar_of({"etc/x": b"two\n"}),))
    async with asyncio.timeout(10):  # one build of both, or two
        while "v3" not in git(store, "ls-tree", "--name-only", "hroot/fs/app"):
            await asyncio.sleep(0.05)
    diff = git(store, "diff", "--name-status", "hroot/fs/app:v1", "hroot/fs/app:v2")
    assert diff.splitlines() == ["M\tetc/x"]
    diff = git(store, "diff", "--name-status", "hroot/fs/app:v2", "hroot/fs/app:v3")
    assert diff.splitlines() == ["D\tetc/y"]
    subjects = git(store, "log", "--format=%s", "hroot/fs/app").splitlines()
    assert subjects[-1] == "fs view of app: built v1" and len(subjects) in (2, 3)
    await api.push_image("team/b", "1", (tar_of({"a": b"a"}),))
    await view_moves(store, "team/b", None)
    await api.push_image("other", "1", (tar_of({"a": b"a"}),))
    await asyncio.sleep(1)
    assert store.fs_view_commit("other") is None  # not named by fs_view


async def test_no_views_by_default(make_api: MakeApi, store: Store) -> None:
    api = await make_api()
    await api.push_image("app", "v1", (tar_of({"a": b"a"}),))
    await asyncio.sleep(1)
    assert store.fs_view_commit("app") is None


async def test_a_refused_layer_is_one_log_line_and_the_push_succeeds(
    make_api: MakeApi, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(fs_view=("*",))

    def warnings() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "hroot.fsview" and r.levelno >= logging.WARNING
        ]

    with caplog.at_level(logging.INFO, logger="hroot.fsview"):
        await api.push_image("app", "bad", (tar_of({"../escaped": b"x"}),))  # answered 201
        await view_moves(store, "app", None)
        # The ref moves in the writing thread; the line follows on the loop.
        async with asyncio.timeout(5):
            while not warnings():
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # and no second line comes
    lines = warnings()
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "fs view of app:bad refused: layer sha256:" in lines[0].getMessage()
    assert "leaves the root with '..'" in lines[0].getMessage()


def test_fs_view_setting_from_toml_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "hroot.toml"
    toml.write_text('fs_view = ["team/*", "app"]\n')
    assert load_config(toml, env={}).fs_view == ("team/*", "app")
    assert load_config(toml, env={}, fs_view=["*"]).fs_view == ("*",)
    toml.write_text("fs_view = true\n")
    with pytest.raises(ConfigError, match="fs_view"):
        load_config(toml, env={})


async def test_git_over_http_carries_no_views(make_api: MakeApi, store: Store) -> None:
    api = await make_api(fs_view=("*",))
    await api.push_image("app", "v1", (tar_of({"a": b"a"}),))
    await view_moves(store, "app", None)
    url = str(api.client.make_url("/git/"))
    listing = await asyncio.create_subprocess_exec(
        "git", "ls-remote", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await listing.communicate()
    assert listing.returncode == 0, err
    assert [line.split("\t")[1] for line in out.decode().splitlines()] == ["refs/heads/hroot/app"]
