"""Read-only git over HTTP at /git/ (README: git over HTTP): `git clone --mirror URL`.

git's smart protocol (v0 and v2, stateless RPC, as `git http-backend` speaks it) served by
`git upload-pack` itself, the fastest and best-tested pack server there is, streamed both
ways so memory never grows with a pack. A client sees the registry's branches
(`refs/heads/hroot/*`) and nothing else: no staging refs, no upload spools, no HEAD.
Pushes are refused: images enter through the OCI API, which keeps docs/format.md's rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from aiohttp import web

from registry.common import PIECE, body_pieces, store
from registry.errors import GitRequestFailed
from storage.errors import Denied, Unsupported

log = logging.getLogger("hroot.git")

SERVICE = "git-upload-pack"
READ_ONLY = "this registry's git endpoint is read-only; push images with the OCI API"
BRANCHES = "refs/heads/hroot/"

UPLOAD_PACK = (
    "git",
    # Hide every ref, then show the registry's branches again (later entries win, and the
    # command line is read last); HEAD is no ref under refs/ and points nowhere useful here.
    "-c",
    "uploadpack.hideRefs=refs",
    "-c",
    f"uploadpack.hideRefs=!{BRANCHES}",
    "-c",
    "uploadpack.hideRefs=HEAD",
    # Whatever the repository's own config says: no hidden tip, no object just by its id.
    "-c",
    "uploadpack.allowTipSHA1InWant=false",
    "-c",
    "uploadpack.allowAnySHA1InWant=false",
    "-c",
    "uploadpack.allowRefInWant=false",
    "upload-pack",
    "--stateless-rpc",
)

# As `git http-backend`: neither the refs nor a negotiation may come from a cache.
NO_CACHE = {
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
}

# upload-pack sends a keepalive every 5 s while pack-objects works (uploadpack.keepAlive), and
# a healthy client drains what it is sent: this long without either, the request is stuck.
IDLE_TIMEOUT = 300.0
STDERR_KEPT = 4096  # the tail of upload-pack's stderr kept for the log and the error
FLUSH = b"0000"  # the pkt-line that ends a section
OBJECT_ID = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")


def pkt_line(data: bytes) -> bytes:
    """One pkt-line of git's protocol: four hex digits of length (their own included), data."""
    return b"%04x" % (len(data) + 4) + data


def _wants_v2(request: web.Request) -> bool:
    """Whether the client asked for protocol v2: `Git-Protocol` holds colon-separated
    `key=value` pairs, read as git's own server reads GIT_PROTOCOL."""
    return "version=2" in request.headers.get("Git-Protocol", "").split(":")


class _UploadPack:
    """A running `git upload-pack` and the tail of what it said on stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = b""
        self._draining = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        """Read stderr as it comes, so a chatty upload-pack never blocks on a full pipe."""
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(PIECE):
            self.stderr = (self.stderr + chunk)[-STDERR_KEPT:]

    async def read(self) -> bytes:
        """The next piece of its stdout (b"" at the end), waiting IDLE_TIMEOUT at most."""
        assert self.process.stdout is not None
        return await asyncio.wait_for(self.process.stdout.read(PIECE), IDLE_TIMEOUT)

    async def failure(self) -> str | None:
        """After its stdout ended: None if it succeeded, else why not (its last stderr line)."""
        returncode = await self.process.wait()
        await self._draining
        if returncode == 0:
            return None
        said = self.stderr.decode(errors="replace").strip().splitlines()
        return said[-1] if said else f"git upload-pack exited with status {returncode}"

    async def stop(self) -> None:
        """Kill it if it still runs (the client left, or we gave up on it), and reap it."""
        await _stop(self.process, self._draining)


# Reapings under way, kept here so none is garbage-collected before it ends.
_REAPING: set[asyncio.Task[None]] = set()


async def _stop(process: asyncio.subprocess.Process, *readers: asyncio.Task[None]) -> None:
    """Kill `process` if it still runs, then reap it, even when the handler is cancelled
    meanwhile: asyncio closes a child's pipes only once they are read to their end."""
    if process.returncode is None:
        process.kill()
    reaping = asyncio.ensure_future(_reap(process, readers))
    _REAPING.add(reaping)
    reaping.add_done_callback(_REAPING.discard)
    await asyncio.shield(reaping)


async def _reap(
    process: asyncio.subprocess.Process, readers: tuple[asyncio.Task[None], ...]
) -> None:
    """Read what is left of its stdout (a pipe's worth at most, it has ended), let its other
    `readers` finish, and wait for its exit status."""
    assert process.stdout is not None
    while await process.stdout.read(PIECE):
        pass
    for reader in readers:
        await reader
    await process.wait()


@asynccontextmanager
async def _start_upload_pack(request: web.Request, *args: str) -> AsyncIterator[_UploadPack]:
    """`git upload-pack --stateless-rpc ARGS <gitdir>` for this request, killed on the way out.

    Every /git/ request starts upload-pack here, so this is where /git/ will apply the same
    pull rules as /v2/ once the registry has authentication.
    """
    env = {key: value for key, value in os.environ.items() if key != "GIT_PROTOCOL"}
    if _wants_v2(request):
        env["GIT_PROTOCOL"] = "version=2"
    process = await asyncio.create_subprocess_exec(
        *UPLOAD_PACK,
        *args,
        str(store(request).path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    upload_pack = _UploadPack(process)
    try:
        yield upload_pack
    finally:
        await upload_pack.stop()


async def advertise_refs(request: web.Request) -> web.StreamResponse:
    """GET /git/info/refs?service=git-upload-pack: the refs a fetch or clone starts from.

    Only the smart protocol is served: without `service` (the dumb protocol) it is a 404.
    """
    service = request.query.get("service")
    if service == "git-receive-pack":
        raise Denied(message=READ_ONLY)
    if service != SERVICE:
        raise web.HTTPNotFound()
    # v0 answers start by naming the service; v2 starts with its capabilities at once.
    preamble = b"" if _wants_v2(request) else pkt_line(f"# service={SERVICE}\n".encode()) + FLUSH
    async with _start_upload_pack(request, "--advertise-refs") as upload_pack:
        assert upload_pack.process.stdin is not None
        upload_pack.process.stdin.close()
        return await _answer(
            request, upload_pack, f"application/x-{SERVICE}-advertisement", preamble
        )


async def upload_pack_rpc(request: web.Request) -> web.StreamResponse:
    """POST /git/git-upload-pack: one round of negotiation, or the pack, streamed.

    v0 answers while it reads (an ACK per common object), so the body is fed to upload-pack
    alongside; v2 answers only once it has read the whole request, whose wants are checked
    first. aiohttp has already undone a `Content-Encoding: gzip` by the time we read.
    """
    if request.content_type != f"application/x-{SERVICE}-request":
        raise Unsupported(f"Content-Type {request.content_type!r}")
    wants = _Wants() if _wants_v2(request) else None
    async with _start_upload_pack(request) as upload_pack:
        feeding = asyncio.create_task(_feed(request, upload_pack, wants))
        try:
            if wants is not None:
                await feeding
                await _check_wants(store(request).path, wants.ids)
            return await _answer(
                request, upload_pack, f"application/x-{SERVICE}-result", b"", feeding
            )
        finally:
            feeding.cancel()
            with suppress(asyncio.CancelledError, GitRequestFailed):
                await feeding


async def refuse_push(request: web.Request) -> web.StreamResponse:
    """POST /git/git-receive-pack: 403 DENIED, as for its advertisement."""
    raise Denied(message=READ_ONLY)


class _Wants:
    """The `want <id>` lines of a protocol v2 request, picked out of its pkt-lines as they pass."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= 4:
            try:
                size = int(self._pending[:4], 16)
            except ValueError:
                raise GitRequestFailed(f"not a pkt-line: {bytes(self._pending[:4])!r}") from None
            if size < 4:  # flush, delimiter, response end: no data
                del self._pending[:4]
                continue
            if len(self._pending) < size:
                return
            line = bytes(self._pending[4:size]).rstrip(b"\n")
            del self._pending[:size]
            if line.startswith(b"want "):
                self.ids.append(line.removeprefix(b"want "))


async def _feed(request: web.Request, upload_pack: _UploadPack, wants: _Wants | None) -> None:
    """The request body into upload-pack's stdin, piece by piece; then its end of file."""
    stdin = upload_pack.process.stdin
    assert stdin is not None
    try:
        async for piece in body_pieces(request, GitRequestFailed):
            if wants is not None:
                wants.feed(piece)
            stdin.write(piece)
            await stdin.drain()
    except ConnectionError:  # upload-pack stopped reading: its stdout and stderr say why
        return
    finally:
        stdin.close()


async def _check_wants(gitdir: Path, wants: list[bytes]) -> None:
    """Protocol v2 lets a client want any object by its id (gitprotocol-v2: wants "are not
    limited to advertised objects"), hidden or unreachable ones included. Allow only commits
    the registry's branches reach, which is what upload-pack enforces itself under v0."""
    if not wants:
        return
    for want in wants:
        if not OBJECT_ID.fullmatch(want):
            raise GitRequestFailed(f"not an object id: want {want[:80]!r}")
    rev_list = await asyncio.create_subprocess_exec(
        *("git", "--git-dir", str(gitdir), "rev-list", "--objects", "--stdin"),
        *("--not", f"--glob={BRANCHES}*"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert rev_list.stdin is not None and rev_list.stdout is not None
    try:
        with suppress(ConnectionError):  # it stops reading at an object it does not know
            rev_list.stdin.write(b"\n".join(wants) + b"\n")
            await rev_list.stdin.drain()
            rev_list.stdin.close()
        unreachable = await rev_list.stdout.readline()  # one is enough to refuse
        allowed = not unreachable and await rev_list.wait() == 0
    finally:
        await _stop(rev_list)
    if not allowed:
        what = unreachable.decode(errors="replace").strip() or "an object git does not know"
        raise Denied(f"not reachable from the registry's branches: {what}")


async def _answer(
    request: web.Request,
    upload_pack: _UploadPack,
    content_type: str,
    preamble: bytes,
    feeding: asyncio.Task[None] | None = None,
) -> web.StreamResponse:
    """Stream upload-pack's stdout as the response, headers sent with its first piece.

    Until then a failure is still a JSON error; after it, only closing the connection
    without the end of the body tells the client, so that is what happens.
    """
    response = web.StreamResponse(headers={"Content-Type": content_type, **NO_CACHE})
    try:
        piece = await upload_pack.read()
        if not piece:
            if feeding is not None and feeding.done():
                feeding.result()  # a broken request body is the reason, not upload-pack
            raise GitRequestFailed(await upload_pack.failure())
        await response.prepare(request)
        await asyncio.wait_for(response.write(preamble + piece), IDLE_TIMEOUT)
        while piece := await upload_pack.read():
            await asyncio.wait_for(response.write(piece), IDLE_TIMEOUT)
        failure = await upload_pack.failure()
    except ConnectionError as exc:
        log.info("client left during %s %s: %s", request.method, request.path, exc)
        return response
    except TimeoutError:
        failure = f"nothing moved for {IDLE_TIMEOUT:.0f}s"
        if not response.prepared:
            raise GitRequestFailed(failure) from None
    if failure is None:
        await response.write_eof()
        return response
    log.warning("git upload-pack failed during %s %s: %s", request.method, request.path, failure)
    if request.transport is not None:
        request.transport.abort()
    return response
