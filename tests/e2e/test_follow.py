"""Followers: `hroot serve --follow` beside the session's primary, all real processes.

A follower fetches the primary's branches (over the primary's /git/ endpoint, or from
the path of its repository), serves pulls of them, refuses writes, drops the branches
the primary deleted, and fetches at once when a pull asks for a manifest it lacks.
Every wait polls with a deadline; no test depends on how long anything takes.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, Pushed, assert_serves, push, serving
from .tools import run

pytestmark = pytest.mark.e2e

FAST = "0.5"  # seconds between two fetches, where the periodic fetch is what is tested
NEVER = "3600"  # where only a fetch on a miss can explain what the follower serves
DEADLINE = 60.0
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def source_of(primary: Hroot, how: str) -> str:
    """What a follower is given: the primary's git endpoint, or its repository's path."""
    return f"http://{primary.host}/git/" if how == "http" else str(primary.data)


@contextmanager
def following(source: str, home: Path, interval: str = FAST) -> Iterator[Hroot]:
    """A follower of `source` with a new repository of its own."""
    home.mkdir()
    flags = ("--follow", source, "--follow-interval", interval)
    with serving(home / "follower.git", home / "follower.log", *flags) as follower:
        yield follower
        follower.fsck()


def until(what: str, check: Callable[[], bool], server: Hroot) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE:.0f} s: {what}\n{server.new_log()}", pytrace=False)
        time.sleep(0.1)


def request(
    server: Hroot, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one plain HTTP request, errors included."""
    req = urllib.request.Request(
        f"http://{server.host}{path}", data=body, method=method, headers={"Accept": ACCEPT}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def digest_of(server: Hroot, name: str, reference: str) -> str | None:
    """The digest a HEAD of the manifest answers with; None for a 404."""
    status, headers, _ = request(server, "HEAD", f"/v2/{name}/manifests/{reference}")
    assert status in (200, 404), f"HEAD {name}:{reference} answered {status}"
    return headers["Docker-Content-Digest"] if status == 200 else None


def has_branch(server: Hroot, name: str) -> bool:
    return bool(server.git("branch", "--list", server.branch(name)).strip())


@pytest.mark.parametrize("how", ["path", "http"])
def test_a_follower_serves_the_primarys_images(
    how: str, hroot: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    with following(source_of(hroot, how), tmp_path / "follower") as follower:
        until(
            "the follower serves base:1 and built:1",
            lambda: (
                digest_of(follower, "base", "1") == base.digest
                and digest_of(follower, "built", "1") == built.digest
            ),
            follower,
        )
        assert follower.git("rev-parse", "hroot/built") == hroot.git("rev-parse", "hroot/built")
        assert_serves(follower, base, built, docker, skopeo)


def test_a_follower_refuses_writes_naming_its_primary(
    hroot: Hroot, base: Pushed, docker: Cli, tmp_path: Path
) -> None:
    with following(str(hroot.data), tmp_path / "follower") as follower:
        until("the follower has base:1", lambda: has_branch(follower, "base"), follower)
        for method, path, body in [
            ("POST", "/v2/refused/blobs/uploads/", b""),
            ("PUT", "/v2/refused/manifests/1", b"{}"),
            ("PATCH", "/v2/base/blobs/uploads/some-id", b"chunk"),
            ("DELETE", f"/v2/base/manifests/{base.digest}", None),
        ]:
            status, _, answer = request(follower, method, path, body)
            assert status == 403, (method, path, answer)
            [error] = json.loads(answer)["errors"]
            assert error["code"] == "DENIED"
            assert str(hroot.data) in error["message"]

        ref = follower.ref("refused", "1")
        docker("tag", base.ref, ref)
        code, said = docker.attempt("push", ref)
        docker("rmi", ref)
        assert code != 0
        assert "denied" in said and str(hroot.data) in said, said

        assert digest_of(follower, "base", "1") == base.digest  # the delete changed nothing
        assert not has_branch(follower, "refused")
        assert follower.git("for-each-ref", "refs/hroot/") == ""  # nothing staged
        uploads = follower.data / "hroot" / "uploads"
        assert not uploads.exists() or list(uploads.iterdir()) == []  # no spool either


def test_a_branch_deleted_on_the_primary_leaves_the_follower(
    hroot: Hroot, base: Pushed, built: Pushed, tmp_path: Path
) -> None:
    primary = tmp_path / "primary.git"  # this test's own: a mirror of the session's registry
    run("git", "clone", "--quiet", "--mirror", hroot.data, primary)
    with following(str(primary), tmp_path / "follower") as follower:
        until("the follower has base:1", lambda: has_branch(follower, "base"), follower)
        run("git", "--git-dir", primary, "branch", "-D", "hroot/base")
        until("base is gone from the follower", lambda: not has_branch(follower, "base"), follower)
        assert digest_of(follower, "base", "1") is None
        assert digest_of(follower, "built", "1") == built.digest
        said = f"followed {primary}: hroot/base deleted"
        until("it says so", lambda: said in follower.new_log(), follower)


def test_a_follower_keeps_serving_while_its_primary_is_away(
    hroot: Hroot, base: Pushed, tmp_path: Path
) -> None:
    primary = tmp_path / "primary.git"
    run("git", "clone", "--quiet", "--mirror", hroot.data, primary)
    with following(str(primary), tmp_path / "follower") as follower:
        until("the follower has base:1", lambda: has_branch(follower, "base"), follower)
        primary.rename(tmp_path / "away.git")
        until("a warning", lambda: f"cannot fetch from {primary}" in follower.new_log(), follower)
        assert digest_of(follower, "base", "1") == base.digest

        (tmp_path / "away.git").rename(primary)
        run("git", "--git-dir", primary, "branch", "hroot/back", "hroot/base")
        until("hroot/back arrives", lambda: has_branch(follower, "back"), follower)
        # git moved the ref before the follower logs what the fetch did
        until("it says so", lambda: f"following {primary} again" in follower.new_log(), follower)


@pytest.mark.parametrize("how", ["path", "http"])
def test_a_pull_right_after_a_push_fetches_at_once(
    how: str, hroot: Hroot, base: Pushed, docker: Cli, skopeo: Cli, tmp_path: Path
) -> None:
    with following(source_of(hroot, how), tmp_path / "follower", NEVER) as follower:
        # The follower's first fetch, at its start, has run: the next one would be in an hour.
        until("the first fetch", lambda: "followed" in follower.new_log(), follower)
        name = f"fresh-{secrets.token_hex(4)}"
        ref = hroot.ref(name, "1")
        docker("tag", base.ref, ref)
        digest = push(docker, ref)
        docker("rmi", ref)
        assert follower.inspect_digest(skopeo, name, "1") == digest
        assert f"hroot/{name} new" in follower.new_log()  # logged before the retry answered
