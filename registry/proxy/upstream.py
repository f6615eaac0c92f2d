"""The HTTP client of one upstream registry, as the pull-through cache uses it.

It speaks the distribution API's read side (manifests, blobs, tags) and the three ways
registries ask for credentials: none, Basic, and Docker's token flow (a 401 with
`WWW-Authenticate: Bearer realm=…` sends it to the realm for a token). Whatever goes wrong
upstream comes out as an OCI error the cache can answer with: 404 as MANIFEST_UNKNOWN or
BLOB_UNKNOWN, a timeout as UpstreamTimeout (504), anything else as UpstreamFailed (502),
each naming the upstream. No aiohttp exception escapes, and no password or token is ever
logged or put in a message.

Redirects are followed here, not by aiohttp, so that the rule is ours whatever aiohttp
does: credentials go only to the origin they were meant for (blob GETs are often sent on
to a CDN or S3, which must not see them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from registry.errors import UpstreamFailed, UpstreamTimeout
from registry.upstreams import Upstream
from storage.errors import BlobUnknown, ManifestUnknown, NameUnknown, StoreError

log = logging.getLogger("hroot.proxy")

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)
CONNECT_TIMEOUT = 10.0
MAX_REDIRECTS = 10
MAX_DOCUMENT = 16 * 1024 * 1024  # a token answer or a page of tags, read whole
MAX_TAG_PAGES = 10_000  # a Link chain longer than this is a loop
DEFAULT_TOKEN_LIFETIME = 60.0  # Docker's token specification, when expires_in is absent
REDIRECTS = (301, 302, 303, 307, 308)
CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')
NEXT_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class Found:
    """What a HEAD of a manifest says."""

    digest: str | None  # Docker-Content-Digest, if upstream sent one
    media_type: str | None
    size: int | None


@dataclass(frozen=True)
class Fetched:
    """A manifest fetched whole, its digest checked."""

    body: bytes
    media_type: str
    digest: str  # sha256 of body


@dataclass
class BlobStream:
    """A blob's body as upstream sends it, read once through `chunks`."""

    size: int | None  # Content-Length, if upstream sent one
    _response: aiohttp.ClientResponse = field(repr=False)
    _digest: str = field(repr=False)
    _client: UpstreamClient = field(repr=False)

    async def chunks(self, size: int, verify: bool = True) -> AsyncIterator[bytes]:
        """The body in pieces of exactly `size` bytes, the last maybe shorter. After the last
        one the digest is checked: a body that does not match raises UpstreamFailed instead
        of ending, so a caller stores nothing it did not finish without an error. A caller
        that checks the digest itself (the store does, as it writes) passes verify=False."""
        hasher = _hasher(self._digest) if verify else None
        while True:
            with self._client._guard(f"blob {self._digest}"):
                try:
                    piece = await self._response.content.readexactly(size)
                except asyncio.IncompleteReadError as e:  # the end of the body
                    piece = e.partial
            if piece:
                if hasher is not None:
                    hasher.update(piece)
                yield piece
            if len(piece) < size:
                break
        if hasher is not None and f"{hasher.name}:{hasher.hexdigest()}" != self._digest:
            raise self._client._failed(f"sent a blob that does not match its digest {self._digest}")


class UpstreamClient:
    """One upstream registry, over the caller's session; tokens are cached per scope."""

    def __init__(
        self, upstream: Upstream, session: aiohttp.ClientSession, timeout: float = 30.0
    ) -> None:
        self.upstream = upstream
        self.session = session
        self.timeout = timeout
        self.tags_page = 1000  # `n` of each tags/list request
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=timeout
        )
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, usable until)
        self._asking: dict[str, asyncio.Lock] = {}  # scope -> held while a token is fetched
        self._basic = False  # upstream asked for Basic: send it on every request

    # --- the API -------------------------------------------------------------------------

    async def head_manifest(self, name: str, reference: str) -> Found:
        response = await self._manifest("HEAD", name, reference)
        response.release()
        digest = response.headers.get("Docker-Content-Digest") or None
        if digest and _is_digest(reference) and digest != reference:
            raise self._failed(f"answered digest {digest} for {_ref(name, reference)}")
        return Found(digest, _media_type(response), response.content_length)

    async def get_manifest(self, name: str, reference: str, max_size: int) -> Fetched:
        what = f"manifest {_ref(name, reference)}"
        response = await self._manifest("GET", name, reference)
        try:
            if (response.content_length or 0) > max_size:
                raise self._failed(f"sent a {what} over {max_size} bytes")
            body = await self._read(response, max_size, what)
        finally:
            response.release()
        for expected in (reference, response.headers.get("Docker-Content-Digest")):
            if expected and _is_digest(expected) and _digest_of(body, expected) != expected:
                raise self._failed(f"sent a {what} whose content does not match {expected}")
        media_type = _media_type(response) or _declared_type(body)
        if not media_type:
            raise self._failed(f"sent a {what} without a media type")
        return Fetched(body, media_type, "sha256:" + hashlib.sha256(body).hexdigest())

    async def head_blob(self, name: str, digest: str) -> int:
        response = await self._blob("HEAD", name, digest)
        response.release()
        if response.content_length is None:
            raise self._failed(f"gave no size for blob {digest} of {name}")
        return response.content_length

    @contextlib.asynccontextmanager
    async def blob(self, name: str, digest: str) -> AsyncIterator[BlobStream]:
        """The blob's body, streamed: the connection is held until the block ends (and
        closed then if the body was not read to its end)."""
        _hasher(digest)  # a digest we could not check is refused before any request
        response = await self._blob("GET", name, digest)
        try:
            yield BlobStream(response.content_length, response, digest, self)
        finally:
            response.release()

    async def tags(self, name: str) -> list[str]:
        """Every tag, following `Link: <…>; rel="next"` pages on the upstream itself."""
        unknown = NameUnknown(message=f"repository {name} unknown to upstream {self.upstream}")
        tags: list[str] = []
        url: URL | None = self._url(name, "tags/list").with_query(n=self.tags_page)
        seen: set[URL] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_TAG_PAGES:
                raise self._failed(f"sent an endless list of tags of {name}")
            seen.add(url)
            response = await self._open("GET", name, url, unknown)
            try:
                page = _json(await self._read(response, MAX_DOCUMENT, f"tags of {name}"))
            finally:
                response.release()
            listed = page.get("tags") if isinstance(page, dict) else ()
            if not isinstance(listed, list | None) or not all(
                isinstance(tag, str) for tag in listed or ()
            ):
                raise self._failed(f"sent a malformed list of tags of {name}")
            tags += listed or ()  # Distribution says null for a repository without tags
            url = self._next_page(response)
        return tags

    # --- requests ------------------------------------------------------------------------

    def _url(self, name: str, path: str) -> URL:
        return URL(f"{self.upstream.url}/v2/{name}/{path}")

    async def _manifest(self, method: str, name: str, reference: str) -> aiohttp.ClientResponse:
        unknown = ManifestUnknown(
            message=f"manifest {_ref(name, reference)} unknown to upstream {self.upstream}"
        )
        url = self._url(name, f"manifests/{reference}")
        return await self._open(method, name, url, unknown, {"Accept": ACCEPT})

    async def _blob(self, method: str, name: str, digest: str) -> aiohttp.ClientResponse:
        unknown = BlobUnknown(
            message=f"blob {digest} of {name} unknown to upstream {self.upstream}"
        )
        return await self._open(method, name, self._url(name, f"blobs/{digest}"), unknown)

    async def _open(
        self,
        method: str,
        name: str,
        url: URL,
        unknown: StoreError,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """A 2xx answer (the caller releases it), or the error: `unknown` for a 404."""
        response = await self._send(method, name, url, headers or {})
        if 200 <= response.status < 300:
            return response
        response.release()
        if response.status == 404:
            raise unknown
        if response.status in (401, 403):
            raise self._refused(name)
        raise self._failed(f"answered {response.status} to {method} {url.path}")

    async def _send(
        self, method: str, name: str, url: URL, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send with what credentials we have for NAME; on a 401, get or renew them as the
        challenge asks and send once more. Returns whatever the upstream then answers."""
        scope = f"repository:{name}:pull"
        headers = {**headers, "Accept-Encoding": "identity"}  # the bytes the digest is of
        sent = self._authorization(scope)
        response = await self._follow(method, url, _with(headers, sent))
        if response.status != 401 or response.url.origin() != url.origin():
            return response  # a host we were sent on to gets no credentials, even if it asks
        response.release()
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer" and params.get("realm"):
            authorization = "Bearer " + await self._token(name, scope, params, sent)
        elif scheme == "basic" and self._credentials() and not sent:
            self._basic = True
            authorization = self._basic_header()
        else:
            raise self._refused(name)
        return await self._follow(method, url, _with(headers, authorization))

    async def _follow(
        self, method: str, url: URL, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send, following redirects; Authorization goes only to the first URL's origin."""
        origin = url.origin()
        for _ in range(MAX_REDIRECTS + 1):
            with self._guard(f"{method} {url.path}"):
                response = await self.session.request(
                    method,
                    url,
                    headers=headers,
                    allow_redirects=False,
                    raise_for_status=False,
                    timeout=self._client_timeout,
                )
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or not location:
                return response
            response.release()
            with self._guard(f"a redirect of {method} {url.path}"):
                url = url.join(URL(location))
            if url.origin() != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise self._failed(f"redirected {method} {url.path} more than {MAX_REDIRECTS} times")

    async def _read(self, response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        """The whole body, or UpstreamFailed once it goes past `limit` bytes."""
        body = bytearray()
        with self._guard(what):
            while len(body) <= limit and (piece := await response.content.read(limit + 1)):
                body += piece
        if len(body) > limit:
            raise self._failed(f"sent {what} over {limit} bytes")
        return bytes(body)

    def _next_page(self, response: aiohttp.ClientResponse) -> URL | None:
        found = NEXT_LINK.search(response.headers.get("Link", ""))
        if not found:
            return None
        with self._guard("a Link header"):
            url = response.url.join(URL(found.group(1)))
        if url.origin() != URL(self.upstream.url).origin():
            raise self._failed(f"sent a Link to another host: {url.origin()}")
        return url

    # --- credentials ---------------------------------------------------------------------

    def _credentials(self) -> bool:
        return self.upstream.username is not None and self.upstream.password is not None

    def _basic_header(self) -> str:
        pair = f"{self.upstream.username}:{self.upstream.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authorization(self, scope: str) -> str | None:
        """What to send before any challenge: Basic once upstream asked for it, or a cached
        token still well within its lifetime."""
        if self._basic and self._credentials():
            return self._basic_header()
        token = self._cached(scope)
        return f"Bearer {token}" if token else None

    def _cached(self, scope: str) -> str | None:
        token, until = self._tokens.get(scope, ("", 0.0))
        return token if token and time.monotonic() < until else None

    async def _token(
        self, name: str, scope: str, challenge: dict[str, str], rejected: str | None
    ) -> str:
        """A token for `scope` other than the `rejected` one, cached until shortly before it
        expires; one request to the realm at a time per scope, so that pulls starting
        together ask once. Basic credentials go to the realm when configured; none
        otherwise (an anonymous token, as Docker Hub gives)."""
        async with self._asking.setdefault(scope, asyncio.Lock()):
            token = self._cached(scope)
            if token and f"Bearer {token}" != rejected:
                return token  # fetched meanwhile by another request
            return await self._new_token(name, scope, challenge)

    async def _new_token(self, name: str, scope: str, challenge: dict[str, str]) -> str:
        self._tokens.pop(scope, None)
        with self._guard("the token request"):
            realm = URL(challenge["realm"])
            if realm.scheme not in ("http", "https") or not realm.host:
                raise ValueError(f"realm {challenge['realm']!r} is not an http(s) URL")
            realm = realm.update_query(scope=scope)
            if challenge.get("service"):
                realm = realm.update_query(service=challenge["service"])
        headers = {"Authorization": self._basic_header()} if self._credentials() else {}
        response = await self._follow("GET", realm, headers)
        try:
            if response.status in (401, 403):
                raise self._refused(name)
            if response.status != 200:
                raise self._failed(f"token service answered {response.status} for {name}")
            answer = _json(await self._read(response, MAX_DOCUMENT, f"a token for {name}"))
        finally:
            response.release()
        if not isinstance(answer, dict):
            raise self._failed(f"token service sent a malformed answer for {name}")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._failed(f"token service gave no token for {name}")
        lifetime = answer.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        usable = max(lifetime - 10, lifetime / 2)  # stop using it shortly before it expires
        self._tokens[scope] = (token, time.monotonic() + usable)
        log.debug("upstream %s: a token for %s, used for %.0f s", self.upstream, scope, usable)
        return token

    # --- errors --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """aiohttp's failures (and malformed URLs) as ours: timeouts 504, the rest 502."""
        try:
            yield
        except TimeoutError:
            raise UpstreamTimeout(
                message=f"upstream {self.upstream} did not answer within {self.timeout:g} s "
                f"({what})"
            ) from None
        except (aiohttp.ClientError, ValueError) as e:
            raise self._failed(f"failed ({what}): {type(e).__name__}: {e}") from None

    def _failed(self, what: str) -> UpstreamFailed:
        return UpstreamFailed(message=f"upstream {self.upstream} {what}")

    def _refused(self, name: str) -> UpstreamFailed:
        if self._credentials():
            return self._failed(f"refused hroot's credentials for {name}")
        return self._failed(f"needs credentials for {name}; none are configured")


def _with(headers: dict[str, str], authorization: str | None) -> dict[str, str]:
    return {**headers, "Authorization": authorization} if authorization else dict(headers)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` as ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) or m.group(3) for m in CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _ref(name: str, reference: str) -> str:
    return f"{name}@{reference}" if _is_digest(reference) else f"{name}:{reference}"


def _is_digest(reference: str) -> bool:
    return ":" in reference


def _json(body: bytes) -> Any:
    """A JSON document, or None when it is not one (the caller says what was malformed)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _media_type(response: aiohttp.ClientResponse) -> str | None:
    value = response.headers.get("Content-Type", "").partition(";")[0].strip()
    return value or None


def _declared_type(body: bytes) -> str | None:
    """The manifest's own `mediaType`, for an upstream that sent no Content-Type."""
    document = _json(body)
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    return media_type if isinstance(media_type, str) else None


def _hasher(digest: str) -> Any:
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise UpstreamFailed(message=f"cannot check a digest of algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def _digest_of(body: bytes, like: str) -> str:
    hasher = _hasher(like)
    hasher.update(body)
    return f"{hasher.name}:{hasher.hexdigest()}"
