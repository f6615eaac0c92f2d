"""Read-only git over HTTP at /git/, in process: the answers git clients build on."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import os
import subprocess
from pathlib import Path

import pytest

from storage import Store
from tests.api.helpers import Api, assert_error
from tests.documents import OCI_MANIFEST, digest_of, image_manifest

REQUEST = "application/x-git-upload-pack-request"
V2 = {"Git-Protocol": "version=2"}


def pkt(line: str) -> bytes:
    return b"%04x" % (len(line) + 4) + line.encode()


FLUSH = b"0000"
DELIM = b"0001"


def pkt_lines(data: bytes) -> list[bytes | None]:
    """The payloads of a pkt-line stream; None for each flush, delimiter or response end."""
    lines: list[bytes | None] = []
    while data:
        size = int(data[:4], 16)
        lines.append(data[4:size] if size >= 4 else None)
        data = data[max(size, 4) :]
    return lines


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], input=input, capture_output=True, check=True
    ).stdout.decode()


async def test_v0_advertisement_names_the_service_and_shows_only_branches(
    api: Api, store: Store
) -> None:
    await api.push_image("img")
    await api.push_blob("staged", b"an upload no manifest took in yet")
    assert "refs/hroot/staging/staged" in git(store.path, "for-each-ref")

    resp = await api.client.get("/git/info/refs?service=git-upload-pack")
    assert resp.status == 200
    assert resp.content_type == "application/x-git-upload-pack-advertisement"
    assert "no-cache" in resp.headers["Cache-Control"]
    lines = pkt_lines(await resp.read())
    assert lines[:2] == [b"# service=git-upload-pack\n", None]
    refs = [line.split(b"\0")[0].split()[1].decode() for line in lines[2:] if line]
    assert refs == ["refs/heads/hroot/img"]
    assert lines[-1] is None


async def test_v2_advertisement_is_capabilities_only(api: Api) -> None:
    resp = await api.client.get("/git/info/refs?service=git-upload-pack", headers=V2)
    assert resp.status == 200
    lines = pkt_lines(await resp.read())
    assert lines[0] == b"version 2\n"
    assert any(line and line.startswith(b"ls-refs") for line in lines)
    assert not any(line and line.startswith(b"# service") for line in lines)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/git/info/refs?service=git-receive-pack"), ("POST", "/git/git-receive-pack")],
)
async def test_pushes_are_denied(api: Api, method: str, path: str) -> None:
    resp = await api.client.request(method, path, data=b"0000")
    error = await assert_error(resp, 403, "DENIED")
    assert "read-only" in error["message"]


@pytest.mark.parametrize(
    "path", ["/git/", "/git/HEAD", "/git/info/refs", "/git/objects/info/packs", "/git/x/y"]
)
async def test_other_git_paths_are_json_404s(api: Api, path: str) -> None:
    await assert_error(await api.client.get(path), 404, "NOT_FOUND")


async def test_upload_pack_wants_its_content_type(api: Api) -> None:
    resp = await api.client.post("/git/git-upload-pack", data=FLUSH)
    await assert_error(resp, 415, "UNSUPPORTED")


def demultiplex(lines: list[bytes | None]) -> bytes:
    """The pack out of side-band-64k pkt-lines (band 1), after upload-pack's NAK/ACK lines."""
    pack = b""
    for line in lines:
        if line and line[0] == 1:
            pack += line[1:]
        elif line and line[0] == 3:
            raise AssertionError(line[1:].decode())
    return pack


async def test_gzipped_v0_request_gives_a_pack_git_reads(
    api: Api, store: Store, tmp_path: Path
) -> None:
    """git gzips big requests; what comes back is a pack with the whole branch in it."""
    await api.push_image("img", layers=(b"layer one", b"layer two"))
    tip = git(store.path, "rev-parse", "refs/heads/hroot/img").strip()
    request = pkt(f"want {tip} side-band-64k ofs-delta no-progress\n") + FLUSH + pkt("done\n")
    resp = await api.client.post(
        "/git/git-upload-pack",
        data=gzip.compress(request),
        headers={"Content-Type": REQUEST, "Content-Encoding": "gzip"},
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-git-upload-pack-result"
    lines = pkt_lines(await resp.read())
    assert lines[0] == b"NAK\n"

    clone = tmp_path / "clone.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(clone)], check=True)
    git(clone, "index-pack", "--stdin", input=demultiplex(lines[1:]))
    git(clone, "update-ref", "refs/heads/img", tip)
    git(clone, "fsck", "--full", "--strict")
    assert git(clone, "rev-list", "--count", "--all").strip() == "1"


def v2_fetch(*wants: str) -> bytes:
    return (
        pkt("command=fetch\n")
        + DELIM
        + b"".join(pkt(f"want {want}\n") for want in wants)
        + pkt("no-progress\n")
        + pkt("done\n")
        + FLUSH
    )


async def test_v2_fetch_of_a_branch_tip_gives_a_pack(api: Api, store: Store) -> None:
    await api.push_image("img")
    tip = git(store.path, "rev-parse", "refs/heads/hroot/img").strip()
    resp = await api.client.post(
        "/git/git-upload-pack", data=v2_fetch(tip), headers={"Content-Type": REQUEST, **V2}
    )
    assert resp.status == 200, await resp.text()
    assert b"packfile\n" in pkt_lines(await resp.read())


@pytest.mark.parametrize("with_the_tip", [False, True], ids=["alone", "beside-a-tip"])
async def test_v2_wants_of_hidden_objects_are_denied(
    api: Api, store: Store, with_the_tip: bool
) -> None:
    """Protocol v2 itself would hand out any object by id: a staged upload's tree must not go."""
    await api.push_image("img")
    await api.push_blob("staged", b"an upload no manifest took in yet")
    staged = git(store.path, "rev-parse", "refs/hroot/staging/staged").strip()
    wants = [staged]
    if with_the_tip:
        wants.insert(0, git(store.path, "rev-parse", "refs/heads/hroot/img").strip())
    resp = await api.client.post(
        "/git/git-upload-pack", data=v2_fetch(*wants), headers={"Content-Type": REQUEST, **V2}
    )
    error = await assert_error(resp, 403, "DENIED")
    assert staged in error["detail"]


async def test_v2_want_of_an_object_git_does_not_have_is_denied(api: Api) -> None:
    await api.push_image("img")
    resp = await api.client.post(
        "/git/git-upload-pack", data=v2_fetch("1" * 40), headers={"Content-Type": REQUEST, **V2}
    )
    await assert_error(resp, 403, "DENIED")


async def test_v2_want_that_is_no_object_id_is_refused(api: Api) -> None:
    resp = await api.client.post(
        "/git/git-upload-pack", data=v2_fetch("HEAD"), headers={"Content-Type": REQUEST, **V2}
    )
    await assert_error(resp, 400, "UNKNOWN")


def upload_packs_of(gitdir: Path) -> list[str]:
    """The ids of running `git upload-pack` processes serving `gitdir`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended while we looked
            continue
        if b"upload-pack" in argv and str(gitdir).encode() in argv:
            found.append(cmdline.parent.name)
    return found


async def test_a_client_that_leaves_takes_its_upload_pack_along(
    served: tuple[str, int], store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A pack bigger than the socket buffers, a client gone after its first bytes: upload-pack
    is killed (in either way aiohttp treats a gone client) and nothing is logged as an error."""
    big = os.urandom(16 << 20)
    for blob in (b"{}", big):
        store.put_blob("img", digest_of(blob), io.BytesIO(blob), len(blob))
    store.put_manifest("img", "1", image_manifest(b"{}", [big]), OCI_MANIFEST)
    tip = git(store.path, "rev-parse", "refs/heads/hroot/img").strip()
    body = pkt(f"want {tip} side-band-64k\n") + FLUSH + pkt("done\n")
    head = (
        f"POST /git/git-upload-pack HTTP/1.1\r\nHost: x\r\nContent-Type: {REQUEST}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(*served)
    writer.write(head.encode() + body)
    assert (await asyncio.wait_for(reader.read(100), 30)).startswith(b"HTTP/1.1 200 ")
    assert upload_packs_of(store.path)
    writer.transport.abort()
    for _ in range(200):
        if not upload_packs_of(store.path):
            break
        await asyncio.sleep(0.05)
    assert not upload_packs_of(store.path)
    assert all(r.levelno < logging.WARNING and not r.exc_info for r in caplog.records)
