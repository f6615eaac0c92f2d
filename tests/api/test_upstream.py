"""registry.proxy.upstream against real registries on loopback, and small servers of our own
for what no real registry does on purpose (wrong bytes, redirects to another host, silence).

The real ones: CNCF Distribution open and behind htpasswd (Basic), and hroot with
`--htpasswd` (Docker's token flow), each holding one small image under two tags.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from registry.errors import UpstreamFailed, UpstreamTimeout, status_of
from registry.proxy.upstream import MANIFEST_TYPES, UpstreamClient
from registry.upstreams import Upstream
from storage.errors import BlobUnknown, ManifestUnknown, NameUnknown
from tests import proxy_servers as servers
from tests.proxy_servers import OCI_MANIFEST, Image, Registry, sha256

NAME = "small/app"
USER = ("puller", "a long upstream password")
PIECE = 65536


@pytest.fixture(scope="module")
def image() -> Image:
    return servers.make_image()


def _serving(registry: Registry, image: Image) -> Registry:
    servers.push(registry, NAME, image, "1", "2")
    return registry


@pytest.fixture(scope="module")
def open_distribution(tmp_path_factory: pytest.TempPathFactory, image: Image) -> Iterator[Registry]:
    with servers.distribution(tmp_path_factory.mktemp("open")) as registry:
        yield _serving(registry, image)


@pytest.fixture(scope="module")
def basic_distribution(
    tmp_path_factory: pytest.TempPathFactory, image: Image
) -> Iterator[Registry]:
    with servers.distribution(tmp_path_factory.mktemp("basic"), USER) as registry:
        yield _serving(registry, image)


@pytest.fixture(scope="module")
def token_hroot(tmp_path_factory: pytest.TempPathFactory, image: Image) -> Iterator[Registry]:
    with servers.hroot(tmp_path_factory.mktemp("token"), USER) as registry:
        yield _serving(registry, image)


@pytest.fixture(params=["open_distribution", "basic_distribution", "token_hroot"])
def upstream(request: pytest.FixtureRequest) -> Registry:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(params=["basic_distribution", "token_hroot"])
def guarded(request: pytest.FixtureRequest) -> Registry:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(
    session: aiohttp.ClientSession,
    url: str,
    credentials: tuple[str, str] | None = None,
    timeout: float = 30.0,
) -> UpstreamClient:
    user, password = credentials or (None, None)
    return UpstreamClient(Upstream(url, username=user, password=password), session, timeout)


def of(session: aiohttp.ClientSession, registry: Registry) -> UpstreamClient:
    return client(session, registry.url, registry.credentials)


# --- real registries -------------------------------------------------------------------


async def test_manifest_by_tag_and_by_digest(
    upstream: Registry, image: Image, session: aiohttp.ClientSession
) -> None:
    up = of(session, upstream)
    found = await up.head_manifest(NAME, "1")
    assert (found.digest, found.media_type, found.size) == (
        image.digest,
        OCI_MANIFEST,
        len(image.manifest),
    )
    for reference in ("2", image.digest):
        fetched = await up.get_manifest(NAME, reference, max_size=4 * 1024 * 1024)
        assert (fetched.body, fetched.media_type, fetched.digest) == (
            image.manifest,
            OCI_MANIFEST,
            image.digest,
        )
    assert (await up.head_manifest(NAME, image.digest)).digest == image.digest


async def test_blobs_stream_in_exact_pieces(
    upstream: Registry, image: Image, session: aiohttp.ClientSession
) -> None:
    up = of(session, upstream)
    for digest, data in image.blobs.items():
        assert await up.head_blob(NAME, digest) == len(data)
        async with up.blob(NAME, digest) as stream:
            assert stream.size == len(data)
            pieces = [piece async for piece in stream.chunks(PIECE)]
        assert b"".join(pieces) == data
        assert all(len(piece) == PIECE for piece in pieces[:-1])
        assert 0 < len(pieces[-1]) <= PIECE
    assert len(image.layer) % PIECE, "the layer should end in a short piece"


async def test_a_blob_left_half_read_frees_its_connection(
    upstream: Registry, image: Image, session: aiohttp.ClientSession
) -> None:
    up = of(session, upstream)
    layer = sha256(image.layer)
    async with up.blob(NAME, layer) as stream:
        async for _ in stream.chunks(PIECE):
            break
    assert await up.head_blob(NAME, layer) == len(image.layer)


async def test_tags_follow_link_pages(upstream: Registry, session: aiohttp.ClientSession) -> None:
    up = of(session, upstream)
    assert sorted(await up.tags(NAME)) == ["1", "2"]
    up.tags_page = 1
    assert sorted(await up.tags(NAME)) == ["1", "2"]


async def test_unknown_names_are_the_ocis_404s(
    upstream: Registry, session: aiohttp.ClientSession
) -> None:
    up = of(session, upstream)
    missing = sha256(b"never pushed")
    with pytest.raises(ManifestUnknown, match=f"{NAME}:3 unknown to upstream {upstream.url}"):
        await up.head_manifest(NAME, "3")
    with pytest.raises(ManifestUnknown, match=f"{NAME}@{missing} unknown to upstream"):
        await up.get_manifest(NAME, missing, 4096)
    with pytest.raises(BlobUnknown, match=f"blob {missing} of {NAME} unknown to upstream"):
        await up.head_blob(NAME, missing)
    with pytest.raises(BlobUnknown, match=upstream.url):
        async with up.blob(NAME, missing):
            pass
    with pytest.raises(NameUnknown, match="repository other/app unknown to upstream"):
        await up.tags("other/app")


async def test_wrong_credentials_name_the_upstream(
    guarded: Registry, session: aiohttp.ClientSession
) -> None:
    up = client(session, guarded.url, (USER[0], "not the password"))
    with pytest.raises(UpstreamFailed) as refused:
        await up.head_manifest(NAME, "1")
    assert refused.value.message == f"upstream {guarded.url} refused hroot's credentials for {NAME}"
    assert status_of(refused.value) == 502
    assert "not the password" not in str(refused.value)


async def test_no_credentials_where_some_are_needed(
    guarded: Registry, session: aiohttp.ClientSession
) -> None:
    up = client(session, guarded.url)
    with pytest.raises(UpstreamFailed, match=f"upstream {guarded.url} needs credentials for"):
        await up.tags(NAME)


async def test_a_manifest_over_the_limit_fails(
    open_distribution: Registry, image: Image, session: aiohttp.ClientSession
) -> None:
    up = of(session, open_distribution)
    with pytest.raises(UpstreamFailed, match="over 100 bytes"):
        await up.get_manifest(NAME, "1", max_size=100)
    fetched = await up.get_manifest(NAME, "1", max_size=len(image.manifest))
    assert fetched.body == image.manifest


async def test_a_closed_port_fails(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        with pytest.raises(UpstreamFailed, match=f"upstream {url} failed") as failed:
            await client(session, url).head_manifest(NAME, "1")
    assert not isinstance(failed.value, UpstreamTimeout)


async def test_a_silent_upstream_times_out(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # the kernel accepts connections; nobody ever answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=f"upstream {url} did not answer within 0.5 s"):
            await client(session, url, timeout=0.5).get_manifest(NAME, "1", 4096)
        assert time.monotonic() - started < 3
        assert status_of(UpstreamTimeout()) == 504


# --- servers of our own ----------------------------------------------------------------


async def test_a_manifest_that_does_not_match_its_digest_fails(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, image: Image
) -> None:
    async def manifest(request: web.Request) -> web.Response:
        assert set(request.headers["Accept"].split(", ")) == set(MANIFEST_TYPES)
        body = image.manifest + b" "  # not the bytes of any digest it claims
        headers = {"Docker-Content-Digest": image.digest} if request.match_info["ref"] else {}
        return web.Response(body=body, content_type=OCI_MANIFEST, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/small/app/manifests/{ref}", manifest)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"))
    with pytest.raises(UpstreamFailed, match=f"does not match {image.digest}"):
        await up.get_manifest(NAME, image.digest, 4096)
    with pytest.raises(UpstreamFailed, match=f"does not match {image.digest}"):
        await up.get_manifest(NAME, "1", 4096)  # by tag: against Docker-Content-Digest


async def test_a_blob_that_does_not_match_its_digest_fails_at_its_end(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, image: Image
) -> None:
    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=image.layer[:-1] + b"?")

    app = web.Application()
    app.router.add_get("/v2/small/app/blobs/{digest}", blob)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"))
    pieces: list[bytes] = []
    with pytest.raises(UpstreamFailed, match="blob that does not match its digest"):
        async with up.blob(NAME, sha256(image.layer)) as stream:
            async for piece in stream.chunks(PIECE):
                pieces.append(piece)
    assert sum(map(len, pieces)) == len(image.layer)  # streamed, then refused


async def test_server_errors_and_malformed_answers_fail(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>a login page</html>")

    app = web.Application()
    app.router.add_get("/v2/small/app/manifests/{ref}", broken)
    app.router.add_get("/v2/small/app/tags/list", not_json)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"))
    with pytest.raises(UpstreamFailed, match="answered 500"):
        await up.get_manifest(NAME, "1", 4096)
    with pytest.raises(UpstreamFailed, match="malformed list of tags"):
        await up.tags(NAME)


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_a_redirect_to_another_host_carries_no_credentials(
    aiohttp_server: AiohttpServer,
    session: aiohttp.ClientSession,
    image: Image,
    scheme: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The upstream wants credentials and sends blob GETs on to a CDN on another port (another
    origin): the CDN must see no Authorization, the token is asked for once, and neither
    it nor the password is logged."""
    caplog.set_level(logging.DEBUG)
    seen: dict[str, list[str | None]] = {"upstream": [], "cdn": [], "token": []}
    layer = sha256(image.layer)

    async def cdn(request: web.Request) -> web.Response:
        seen["cdn"].append(request.headers.get("Authorization"))
        return web.Response(body=image.layer)

    cdn_app = web.Application()
    cdn_app.router.add_get("/storage/{digest}", cdn)
    cdn_server = await aiohttp_server(cdn_app)

    async def token(request: web.Request) -> web.Response:
        seen["token"].append(request.headers.get("Authorization"))
        assert request.query["scope"] == f"repository:{NAME}:pull"
        assert request.query["service"] == "upstream"
        return web.json_response({"token": "t0ken", "expires_in": 300})

    async def blob(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        seen["upstream"].append(authorization)
        if authorization is None:
            realm = request.url.with_path("/token").with_query(None)
            challenge = (
                'Basic realm="upstream"'
                if scheme == "basic"
                else f'Bearer realm="{realm}",service="upstream",scope="repository:{NAME}:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        target = cdn_server.make_url(f"/storage/{request.match_info['digest']}")
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_route("*", "/v2/small/app/blobs/{digest}", blob)
    app.router.add_get("/token", token)
    server = await aiohttp_server(app)
    assert server.port != cdn_server.port
    up = client(session, str(server.make_url("")).rstrip("/"), USER)
    for _ in range(2):
        async with up.blob(NAME, layer) as stream:
            assert b"".join([piece async for piece in stream.chunks(PIECE)]) == image.layer
    assert seen["cdn"] == [None, None]
    sent = [a for a in seen["upstream"] if a is not None]
    assert len(sent) == 2 and all(a.lower().startswith(scheme) for a in sent)
    assert seen["upstream"][0] is None  # anonymous first, then as challenged
    assert len(seen["upstream"]) == 3  # and the credentials reused on the second GET
    if scheme == "bearer":
        assert sent == ["Bearer t0ken", "Bearer t0ken"]
        assert len(seen["token"]) == 1 and str(seen["token"][0]).startswith("Basic ")
        assert "a token for repository:small/app:pull" in caplog.text
    assert "t0ken" not in caplog.text and USER[1] not in caplog.text


async def test_aiohttp_exceptions_never_escape_a_half_read_blob(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, image: Image
) -> None:
    """A body cut short (the upstream died mid-blob) or stalled is ours, not aiohttp's."""

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(image.layer))})
        await response.prepare(request)
        await response.write(image.layer[:100_000])
        if request.match_info["digest"].endswith("0"):
            await asyncio.sleep(5)  # stalls
        request.transport.close()  # type: ignore[union-attr]
        return response

    app = web.Application()
    app.router.add_get("/v2/small/app/blobs/{digest}", cut)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"), timeout=0.5)
    stalled = "sha256:" + "0" * 64
    for digest, error in ((sha256(image.layer), UpstreamFailed), (stalled, UpstreamTimeout)):
        with pytest.raises(error):
            async with up.blob(NAME, digest) as stream:
                async for _ in stream.chunks(PIECE):
                    pass


async def test_link_pages_stay_on_the_upstream(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """Pages linked relatively and absolutely are followed; a Link elsewhere is refused.
    (hroot above pages with n=1 too; Distribution 2.8 ignores `n` and sends one page.)"""
    elsewhere = "http://example.invalid/v2/small/app/tags/list?last=c"

    async def tags(request: web.Request) -> web.Response:
        last = request.query.get("last")
        page = {None: ["a"], "a": ["b"], "b": ["c"]}[last]
        link = {
            None: f"</v2/small/app/tags/list?n={request.query['n']}&last=a>",
            "a": f"<{request.url.update_query(last='b')}>",
            "b": f"<{elsewhere}>" if request.query.get("n") == "2" else None,
        }[last]
        headers = {"Link": f'{link}; rel="next"'} if link else {}
        return web.json_response({"name": NAME, "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/small/app/tags/list", tags)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"))
    assert await up.tags(NAME) == ["a", "b", "c"]
    up.tags_page = 2
    with pytest.raises(UpstreamFailed, match="a Link to another host"):
        await up.tags(NAME)


async def test_tokens_are_cached_per_scope_until_shortly_before_they_expire(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, image: Image
) -> None:
    scopes: list[str] = []

    async def token(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers  # anonymous: no credentials configured
        scopes.append(request.query["scope"])
        return web.json_response({"access_token": f"t{len(scopes)}", "expires_in": 1})

    async def manifest(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer t"):
            realm = request.url.with_path("/token").with_query(None)
            challenge = f'Bearer realm="{realm}",service="upstream"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(body=image.manifest, content_type=OCI_MANIFEST)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_route("*", "/v2/{name:.+}/manifests/{ref}", manifest)
    server = await aiohttp_server(app)
    up = client(session, str(server.make_url("")).rstrip("/"))
    together = [up.head_manifest(NAME, "1") for _ in range(5)]  # one token for all five
    for name in (NAME, "other/app", NAME):
        together.append(up.head_manifest(name, "1"))
    found = await asyncio.gather(*together)
    assert {f.media_type for f in found} == {OCI_MANIFEST}
    assert sorted(scopes) == ["repository:other/app:pull", f"repository:{NAME}:pull"]
    await asyncio.sleep(0.6)  # past half of its one second: no longer used
    await up.head_manifest(NAME, "1")
    assert scopes[-1] == f"repository:{NAME}:pull" and len(scopes) == 3
