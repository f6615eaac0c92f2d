"""GET /v2/<name>/tags/list and /v2/_catalog, with ?n=&last= paging and Link headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.api.helpers import Api, assert_error

TAGS = ["1.0", "1.1", "2.0", "latest", "v1"]
REPOS = ["a", "a/b", "b-c", "library/alpine"]


@pytest.fixture
async def tagged(api: Api) -> Api:
    """A repository `img` with the TAGS, all on one manifest."""
    image = await api.push_image("img", TAGS[0])
    for tag in TAGS[1:]:
        assert (await api.put_manifest("img", tag, image.manifest)).status == 201
    return api


@pytest.fixture
async def catalogued(api: Api) -> Api:
    for name in REPOS:
        await api.push_image(name)
    return api


async def test_tags_list(tagged: Api) -> None:
    resp = await tagged.client.get("/v2/img/tags/list")
    assert resp.status == 200
    assert await resp.json() == {"name": "img", "tags": TAGS}
    assert "Link" not in resp.headers


async def test_tags_pages_follow_link(tagged: Api) -> None:
    """n=2: two at a time, each page's Link points at the next, the last page has none."""
    url, pages = "/v2/img/tags/list?n=2", []
    while url:
        resp = await tagged.client.get(url)
        pages.append((await resp.json())["tags"])
        link = resp.headers.get("Link")
        url = link[1 : link.index(">")] if link else ""
        assert link is None or link.endswith('>; rel="next"')
    assert pages == [TAGS[0:2], TAGS[2:4], TAGS[4:]]


async def test_tags_after_last(tagged: Api) -> None:
    resp = await tagged.client.get("/v2/img/tags/list?last=2.0")
    assert (await resp.json())["tags"] == ["latest", "v1"]
    resp = await tagged.client.get("/v2/img/tags/list?n=1&last=1.0")
    assert (await resp.json())["tags"] == ["1.1"]
    assert resp.headers["Link"] == '</v2/img/tags/list?n=1&last=1.1>; rel="next"'


async def test_n_zero_is_an_empty_page(tagged: Api) -> None:
    resp = await tagged.client.get("/v2/img/tags/list?n=0")
    assert (await resp.json())["tags"] == []
    assert "Link" not in resp.headers


@pytest.mark.parametrize("n", ["abc", "-1", "1.5", "1e3", "٣", "9" * 30])
@pytest.mark.parametrize("path", ["/v2/img/tags/list", "/v2/_catalog"])
async def test_malformed_n_is_400(api: Api, path: str, n: str) -> None:
    resp = await api.client.get(path, params={"n": n})
    await assert_error(resp, 400, "PAGINATION_NUMBER_INVALID")


async def test_tags_of_unknown_or_malformed_repository(api: Api) -> None:
    await assert_error(await api.client.get("/v2/none/tags/list"), 404, "NAME_UNKNOWN")
    await assert_error(await api.client.get("/v2/No/tags/list"), 400, "NAME_INVALID")


async def test_catalog(catalogued: Api) -> None:
    resp = await catalogued.client.get("/v2/_catalog")
    assert resp.status == 200
    assert await resp.json() == {"repositories": REPOS}


async def test_catalog_pages(catalogued: Api) -> None:
    resp = await catalogued.client.get("/v2/_catalog?n=3")
    assert (await resp.json())["repositories"] == REPOS[:3]
    assert resp.headers["Link"] == '</v2/_catalog?n=3&last=b-c>; rel="next"'
    resp = await catalogued.client.get("/v2/_catalog?n=3&last=b-c")
    assert (await resp.json())["repositories"] == REPOS[3:]
    assert "Link" not in resp.headers


async def test_empty_catalog(api: Api) -> None:
    assert await (await api.client.get("/v2/_catalog")).json() == {"repositories": []}


async def test_page_size_is_capped(make_api: Callable[..., Awaitable[Api]]) -> None:
    """max_page_size=2: no n, or a bigger one, still gives 2 and a Link to the rest."""
    api = await make_api(max_page_size=2)
    for name in REPOS:
        await api.push_image(name)
    for query in ("", "?n=1000"):
        resp = await api.client.get(f"/v2/_catalog{query}")
        assert (await resp.json())["repositories"] == REPOS[:2]
        assert resp.headers["Link"] == '</v2/_catalog?n=2&last=a%2Fb>; rel="next"'
