"""Random requests at every endpoint (hypothesis): names, digests, references, ranges, query
strings, headers and bodies. Whatever comes, the answer comes in time, is never a 500, is
an OCI JSON error whenever it is not a success, and a refused (4xx) request leaves every
ref and every object of the repository as it was.

Each test serves a real store in a temporary git repository holding a few images, and
runs a fixed sequence of examples (derandomized, no example database), so CI sees the
same requests on every run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from registry.app import create_app
from registry.config import Config
from storage import Store
from storage.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests.api.helpers import API_VERSION, Api, Image
from tests.documents import OCI_LAYER, digest_of, image_manifest

TIMEOUT = 10.0  # seconds any one request may take, answer and body, before it counts as a hang
EXAMPLES = 200  # per test: the whole module runs in about a minute on two cores
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,  # TIMEOUT is the deadline that matters, checked by the request itself
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def snapshot(store: Store, uploads: bool = True) -> dict[str, Any]:
    """What a refused request must leave as it was: every ref and its target (`git
    for-each-ref`), every file under objects/ with its size, and, with `uploads`, every
    upload spool (a refused PUT ends its session on purpose, so the property tests leave
    spools out)."""
    refs = subprocess.run(
        ["git", "--git-dir", str(store.path), "for-each-ref", "--format=%(objectname) %(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    folders = ["objects", "hroot/uploads"] if uploads else ["objects"]
    return {"refs": refs, **{folder: _files(store.path / folder) for folder in folders}}


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(path.relative_to(folder)), path.stat().st_size)
        for path in folder.rglob("*")
        if path.is_file()
    )


# --- what is thrown ---------------------------------------------------------------------------

SOME_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
HEX = "0123456789abcdef"

NAMES = st.one_of(
    st.sampled_from(["app", "base/lib", "nothing", "a.lock", "x" * 300, "App", "a//b", "../app"]),
    st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,4}){0,2}(/[a-z0-9]{1,8}){0,2}", fullmatch=True),
    SOME_TEXT.filter(bool),
)
DIGESTS = st.one_of(
    st.sampled_from(["sha256:" + "0" * 64, "sha512:" + "0" * 128, "sha256:", "md5:abc"]),
    st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.tuples(st.from_regex(r"[a-z0-9+._-]{1,10}", fullmatch=True), st.text(HEX, max_size=70)).map(
        ":".join
    ),
    SOME_TEXT.filter(bool),
)
TAGS = st.one_of(
    st.sampled_from(["v1", "latest", "1", "-bad", "x" * 129, "a:b"]),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True),
    SOME_TEXT.filter(bool),
)
MEDIA_TYPES = st.one_of(
    st.sampled_from(
        [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/json", f"{OCI_MANIFEST}; x=y", ""]
    ),
    st.from_regex(r"[ -~]{0,40}", fullmatch=True),
)
NUMBERS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", "1e3", "0x10"]))
RANGES = st.one_of(
    st.tuples(NUMBERS, NUMBERS).map(lambda r: f"bytes={r[0]}-{r[1]}"),
    st.tuples(NUMBERS, NUMBERS).map(lambda r: f"{r[0]}-{r[1]}"),
    st.from_regex(r"[ -~]{0,30}", fullmatch=True),
)
HEADER_VALUES = st.from_regex(r"[ -~]{0,60}", fullmatch=True).map(str.strip)
QUERIES = st.dictionaries(
    st.one_of(
        st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "service"]),
        st.from_regex(r"[a-zA-Z_]{1,8}", fullmatch=True),
    ),
    st.one_of(NUMBERS, DIGESTS, NAMES, SOME_TEXT),
    max_size=4,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | SOME_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(SOME_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted; quoted segment by segment when sent
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def url(self, root: URL) -> URL:
        query = f"?{urlencode(self.query)}" if self.query else ""
        return URL(f"{root}{quote(self.path, safe='/')}{query}", encoded=True)


@st.composite
def requests(draw: st.DrawFn, method: Any, path: Any, body: Any = None) -> Request:
    """A request of `method` to `path` (strategies) with random query, headers and body."""
    headers = draw(
        st.dictionaries(
            st.sampled_from(
                ["Content-Type", "Range", "Content-Range", "Accept", "Git-Protocol", "X-Random"]
            ),
            st.one_of(MEDIA_TYPES, RANGES, HEADER_VALUES),
            max_size=3,
        )
    )
    content = b"" if body is None else draw(body)
    return Request(draw(method), draw(path), draw(QUERIES), headers, content)


def _manifest(draw: st.DrawFn, images: list[Image]) -> bytes:
    """A manifest-shaped document, mostly near a valid one, its parts drawn at random."""
    known = [digest_of(layer) for image in images for layer in image.layers]
    descriptor = st.fixed_dictionaries(
        {
            "mediaType": st.one_of(st.just(OCI_LAYER), MEDIA_TYPES),
            "digest": st.one_of(st.sampled_from(known), DIGESTS),
            "size": st.one_of(st.integers(-5, 2**64), JSON),
        }
    )
    document = draw(
        st.fixed_dictionaries(
            {
                "schemaVersion": st.one_of(st.just(2), JSON),
                "mediaType": MEDIA_TYPES,
                "config": st.one_of(descriptor, JSON),
                "layers": st.one_of(st.lists(descriptor, max_size=3), JSON),
            },
            optional={"manifests": st.lists(descriptor, max_size=2), "subject": descriptor},
        )
    )
    return json.dumps(document).encode()


@st.composite
def manifest_bodies(draw: st.DrawFn, images: list[Image]) -> bytes:
    kind = draw(st.sampled_from(["manifest", "json", "nested", "bytes", "valid"]))
    if kind == "manifest":
        return _manifest(draw, images)
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "nested":
        depth = draw(st.integers(1, 200_000))
        return b"[" * depth + b"]" * draw(st.sampled_from([depth, 0, depth - 1]))
    if kind == "valid":  # a real image of blobs the registry has: a success, now and then
        image = draw(st.sampled_from(images))
        return image_manifest(b'{"os":"linux","layers":1}', image.layers, annotations=draw(JSON))
    return draw(st.binary(max_size=3000))


# --- the registry under test --------------------------------------------------------------------


class Harness:
    """A served registry with a few images, and the check every answer must pass."""

    def __init__(self, store: Store, root: URL, session: aiohttp.ClientSession) -> None:
        self.store = store
        self.root = root
        self.session = session
        self.images: list[Image] = []

    async def send(self, request: Request) -> int:
        """Send `request` and check its answer; its status."""
        before = snapshot(self.store, uploads=False)
        async with asyncio.timeout(TIMEOUT):
            async with self.session.request(
                request.method,
                request.url(self.root),
                headers=request.headers,
                data=request.body or None,
            ) as resp:
                body = await resp.read()
        assert resp.status < 500, (request, resp.status, body)
        assert resp.headers.get("Docker-Distribution-API-Version") == API_VERSION, request
        if resp.status >= 300 and request.method != "HEAD":
            assert resp.content_type == "application/json", (request, resp.status, body)
            (error,) = json.loads(body)["errors"]
            assert set(error) == {"code", "message", "detail"}, (request, error)
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
        if 400 <= resp.status < 500:
            assert snapshot(self.store, uploads=False) == before, (request, resp.status, body)
        return resp.status

    async def upload(self, name: str) -> str:
        """A session opened under `name` if it is a valid name (else a random id), with a
        few bytes in it: an id the upload endpoints may know."""
        async with self.session.post(f"{self.root}/v2/{quote(name)}/blobs/uploads/") as resp:
            if resp.status != 202:
                return "f" * 32
            location = resp.headers["Location"]
        async with self.session.patch(f"{self.root}{location}", data=b"some bytes") as resp:
            assert resp.status == 202
        return location.rsplit("/", 1)[1]


@contextmanager
def registry(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Harness]]:
    """A loop, and a Harness over a real `create_app` on a real socket, with images in it."""
    loop = asyncio.new_event_loop()
    store = Store.open(tmp_path / "hroot.git", gc_every=0)  # no git gc moving objects meanwhile
    server = TestServer(create_app(Config(data=store.path, body_timeout=5.0), store))

    async def start() -> Harness:
        await server.start_server()
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT), skip_auto_headers=["Content-Type"]
        )
        harness = Harness(store, URL(str(server.make_url("/"))).with_path(""), session)
        api = Api(_Client(session, harness.root))  # type: ignore[arg-type]
        app = await api.push_image("app", "v1", layers=(b"app layer",))
        harness.images = [
            app,
            await api.push_image("base/lib", "1", layers=(b"base layer", b"second")),
            await api.push_image("app", None, layers=(b"untagged",), subject=app),
        ]
        return harness

    harness = loop.run_until_complete(start())
    try:
        yield loop, harness
    finally:
        loop.run_until_complete(harness.session.close())
        loop.run_until_complete(server.close())
        store.close()
        loop.close()


class _Client:
    """Just enough of aiohttp's TestClient for tests.api.helpers.Api to push with."""

    def __init__(self, session: aiohttp.ClientSession, root: URL) -> None:
        self._session = session
        self._root = root

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self._session.post(f"{self._root}{path}", **kwargs)

    async def put(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self._session.put(f"{self._root}{path}", **kwargs)


def _run(tmp_path: Path, strategy: Callable[[Harness], Any], prepare: Any = None) -> None:
    """Send the requests `strategy(harness)` draws, each checked by Harness.send."""
    with registry(tmp_path) as (loop, harness):

        @PROFILE
        @given(st.data())
        def check(data: st.DataObject) -> None:
            request = data.draw(strategy(harness))
            if prepare is not None:
                request = loop.run_until_complete(prepare(harness, request))
            loop.run_until_complete(harness.send(request))

        check()


def _known_digests(harness: Harness) -> st.SearchStrategy[str]:
    images = harness.images
    return st.one_of(
        st.sampled_from([i.digest for i in images]),
        st.sampled_from([digest_of(layer) for i in images for layer in i.layers]),
        DIGESTS,
    )


def _known_names(harness: Harness) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([i.name for i in harness.images]), NAMES)


METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


# --- the tests ------------------------------------------------------------------------------


def test_base_catalog_and_unknown_paths(tmp_path: Path) -> None:
    paths = st.one_of(
        st.sampled_from(["/v2/", "/v2", "/v2/_catalog", "/", "/v1/", "/git/"]),
        st.builds("/v2/{}".format, SOME_TEXT),
    )
    _run(tmp_path, lambda h: requests(METHODS, paths))


def test_tags_and_referrers(tmp_path: Path) -> None:
    def strategy(h: Harness) -> st.SearchStrategy[Request]:
        tags = st.builds("/v2/{}/tags/list".format, _known_names(h))
        referrers = st.builds("/v2/{}/referrers/{}".format, _known_names(h), _known_digests(h))
        return requests(st.sampled_from(["GET", "HEAD"]), st.one_of(tags, referrers))

    _run(tmp_path, strategy)


def test_blobs(tmp_path: Path) -> None:
    def strategy(h: Harness) -> st.SearchStrategy[Request]:
        path = st.builds("/v2/{}/blobs/{}".format, _known_names(h), _known_digests(h))
        return requests(st.sampled_from(["GET", "HEAD", "DELETE"]), path)

    _run(tmp_path, strategy)


def test_manifests(tmp_path: Path) -> None:
    def strategy(h: Harness) -> st.SearchStrategy[Request]:
        reference = st.one_of(TAGS, _known_digests(h))
        path = st.builds("/v2/{}/manifests/{}".format, _known_names(h), reference)
        return st.one_of(
            requests(st.sampled_from(["GET", "HEAD", "DELETE"]), path),
            requests(st.just("PUT"), path, manifest_bodies(h.images)),
        )

    _run(tmp_path, strategy)


def test_upload_sessions(tmp_path: Path) -> None:
    """POST opens sessions; the others use an id opened for that name, for another, or none."""
    ids = st.one_of(
        st.sampled_from(["opened here", "opened elsewhere"]),
        st.text(HEX, min_size=32, max_size=32),
        SOME_TEXT.filter(bool),
    )

    def strategy(h: Harness) -> st.SearchStrategy[Request]:
        bodies = st.one_of(st.just(b""), st.binary(max_size=3000))
        names = _known_names(h)
        post = requests(st.just("POST"), st.builds("/v2/{}/blobs/uploads/".format, names), bodies)
        path = st.builds("/v2/{}/blobs/uploads/{}".format, names, ids)
        use = requests(st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]), path, bodies)
        return st.one_of(post, use)

    async def prepare(h: Harness, request: Request) -> Request:
        """Open the session the request names as `opened here` or `opened elsewhere`."""
        name, _, upload_id = request.path[len("/v2/") :].rpartition("/blobs/uploads/")
        if upload_id not in ("opened here", "opened elsewhere"):
            return request
        opened = await h.upload(name if upload_id == "opened here" else "elsewhere")
        path = f"/v2/{name}/blobs/uploads/{opened}"
        return Request(request.method, path, request.query, request.headers, request.body)

    _run(tmp_path, strategy, prepare)


def test_git_endpoints(tmp_path: Path) -> None:
    services = st.one_of(st.sampled_from(["git-upload-pack", "git-receive-pack"]), SOME_TEXT)
    pkt_lines = st.lists(
        st.one_of(
            st.sampled_from([b"0000", b"0001", b"command=ls-refs\n", b"want " + b"0" * 40 + b"\n"]),
            st.binary(max_size=60),
        ),
        max_size=6,
    ).map(lambda lines: b"".join(b"%04x" % (len(x) + 4) + x for x in lines))

    def strategy(h: Harness) -> st.SearchStrategy[Request]:
        refs = st.builds(
            lambda r, s: Request(r.method, r.path, {**r.query, "service": s}, r.headers, r.body),
            requests(st.just("GET"), st.just("/git/info/refs")),
            services,
        )
        rpc = requests(
            st.just("POST"),
            st.sampled_from(["/git/git-upload-pack", "/git/git-receive-pack"]),
            st.one_of(pkt_lines, st.binary(max_size=500)),
        )
        return st.one_of(refs, rpc)

    _run(tmp_path, strategy)
