"""git over HTTP against a running `hroot serve`: clone, fetch and refused pushes, with git."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.documents import OCI_MANIFEST, digest_of, image_manifest

from .conftest import Hroot, serving
from .tools import output, run

pytestmark = pytest.mark.e2e

PROTOCOLS = pytest.mark.parametrize("protocol", ["2", "0"], ids=["v2", "v0"])


def request(
    url: str, data: bytes | None = None, method: str = "GET", content_type: str | None = None
) -> tuple[int, bytes]:
    """(status, body) of one HTTP request, error statuses included."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def upload(hroot: Hroot, name: str, blob: bytes) -> str:
    """A monolithic blob upload through the OCI API; the blob's digest."""
    digest = digest_of(blob)
    url = f"http://{hroot.host}/v2/{name}/blobs/uploads/?digest={digest}"
    status, body = request(url, blob, "POST", "application/octet-stream")
    assert status == 201, body
    return digest


def push(hroot: Hroot, name: str, tag: str, layers: list[bytes]) -> bytes:
    """An image pushed as clients push it, blobs then manifest; the manifest."""
    config = json.dumps({"os": "linux", "tag": tag}).encode()
    for blob in (config, *layers):
        upload(hroot, name, blob)
    manifest = image_manifest(config, layers)
    url = f"http://{hroot.host}/v2/{name}/manifests/{tag}"
    status, body = request(url, manifest, "PUT", OCI_MANIFEST)
    assert status == 201, body
    return manifest


def git_url(hroot: Hroot) -> str:
    return f"http://{hroot.host}/git/"


def branches(hroot: Hroot) -> str:
    """`<id> <ref>` of every registry branch of the server, one a line."""
    return hroot.git("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/hroot/")


@pytest.fixture
def head_on_a_branch(hroot: Hroot) -> Iterator[str]:
    """The server's HEAD pointed at one of its branches (a clone of a registry has that),
    so that a HEAD that leaks shows; put back afterwards."""
    push(hroot, "githttp/head", "1", [b"behind HEAD"])
    before = hroot.git("symbolic-ref", "HEAD").strip()
    hroot.git("symbolic-ref", "HEAD", "refs/heads/" + hroot.branch("githttp/head"))
    yield hroot.branch("githttp/head")
    hroot.git("symbolic-ref", "HEAD", before)


@PROTOCOLS
def test_a_mirror_clone_holds_the_branches_and_nothing_else(
    hroot: Hroot, head_on_a_branch: str, protocol: str, tmp_path: Path
) -> None:
    push(hroot, "githttp/mirror", "1", [b"first layer", b"second layer"])
    upload(hroot, "githttp/staged", b"an upload no manifest took in yet")
    assert "refs/hroot/staging/" in hroot.git("for-each-ref")

    mirror = tmp_path / "mirror.git"
    git = ("git", "-c", f"protocol.version={protocol}")
    run(*git, "clone", "--quiet", "--mirror", git_url(hroot), mirror)
    run("git", "--git-dir", mirror, "fsck", "--full", "--strict")
    cloned = output("git", "--git-dir", mirror, "for-each-ref", "--format=%(objectname) %(refname)")
    assert cloned == branches(hroot)

    remote = output(*git, "ls-remote", git_url(hroot))
    assert remote.replace("\t", " ") == branches(hroot)
    assert output(*git, "ls-remote", "--symref", git_url(hroot), "HEAD") == ""


def test_a_mirror_clone_serves_the_images_byte_for_byte(hroot: Hroot, tmp_path: Path) -> None:
    layers = [os.urandom(300_000), os.urandom(200_000)]
    manifest = push(hroot, "githttp/intact", "1", layers)
    mirror = tmp_path / "mirror.git"
    run("git", "clone", "--quiet", "--mirror", git_url(hroot), mirror)

    with serving(mirror, tmp_path / "mirror.log") as second:
        status, served = request(f"http://{second.host}/v2/githttp/intact/manifests/1")
        assert (status, served) == (200, manifest)
        for layer in layers:
            url = f"http://{second.host}/v2/githttp/intact/blobs/{digest_of(layer)}"
            assert request(url) == (200, layer)
        second.fsck()


def packs(repo: Path) -> set[Path]:
    return set((repo / "objects" / "pack").glob("*.pack"))


def test_an_incremental_fetch_brings_only_what_is_new(hroot: Hroot, tmp_path: Path) -> None:
    """The second fetch negotiates from what the first brought: its pack has the new image
    only, not the big layer again."""
    big = os.urandom(2 << 20)
    push(hroot, "githttp/fetched", "1", [big])
    local = tmp_path / "local.git"
    run("git", "init", "--quiet", "--bare", local)
    # Keep every fetched pack as it came (no unpacking into loose objects), to measure it.
    fetch = ("git", "--git-dir", local, "-c", "fetch.unpackLimit=1", "fetch", "--quiet")
    branch = hroot.branch("githttp/fetched")
    refspec = f"{branch}:refs/heads/{branch}"

    run(*fetch, git_url(hroot), refspec)
    (first,) = packs(local)
    assert first.stat().st_size > len(big)

    push(hroot, "githttp/fetched", "2", [big, b"one more small layer"])
    run(*fetch, git_url(hroot), refspec)
    (second,) = packs(local) - {first}
    assert second.stat().st_size < 64 << 10
    assert output("git", "--git-dir", local, "rev-parse", branch) == hroot.git("rev-parse", branch)
    run("git", "--git-dir", local, "fsck", "--full", "--strict")


def test_pushes_are_refused_with_denied(hroot: Hroot, tmp_path: Path) -> None:
    push(hroot, "githttp/pushed", "1", [b"a layer"])
    branch = hroot.branch("githttp/pushed")
    before = branches(hroot)
    work = tmp_path / "work.git"
    run("git", "clone", "--quiet", "--bare", git_url(hroot), work)
    tip = output("git", "--git-dir", work, "rev-parse", branch).strip()
    commit = output(
        "git", "--git-dir", work, "commit-tree", "-p", tip, "-m", "by git", f"{tip}^{{tree}}"
    )

    pushed = run(
        "git",
        "--git-dir",
        work,
        "push",
        git_url(hroot),
        f"{commit.strip()}:refs/heads/{branch}",
        check=False,
    )
    assert pushed.returncode != 0
    assert b"403" in pushed.stderr
    assert branches(hroot) == before

    for method, path in (
        ("GET", "info/refs?service=git-receive-pack"),
        ("POST", "git-receive-pack"),
    ):
        status, body = request(git_url(hroot) + path, b"0000" if method == "POST" else None, method)
        assert status == 403
        (error,) = json.loads(body)["errors"]
        assert error["code"] == "DENIED"
        assert "read-only" in error["message"]


@PROTOCOLS
def test_hidden_refs_and_objects_cannot_be_fetched(
    hroot: Hroot, protocol: str, tmp_path: Path
) -> None:
    upload(hroot, "githttp/hidden", b"staged, in no manifest")
    staging = "refs/hroot/staging/" + hroot.branch("githttp/hidden").removeprefix("hroot/")
    staged_tree = hroot.git("rev-parse", staging).strip()
    local = tmp_path / "local.git"
    run("git", "init", "--quiet", "--bare", local)
    fetch = ("git", "--git-dir", local, "-c", f"protocol.version={protocol}", "fetch")

    by_name = run(*fetch, git_url(hroot), staging, check=False)
    assert by_name.returncode != 0
    assert b"couldn't find remote ref" in by_name.stderr

    by_id = run(*fetch, git_url(hroot), staged_tree, check=False)
    assert by_id.returncode != 0
    if protocol == "2":  # v0 clients give up by themselves; under v2 the server says no
        assert '"POST /git/git-upload-pack" 403' in hroot.new_log()
    assert run("git", "--git-dir", local, "cat-file", "-e", staged_tree, check=False).returncode
