"""The web pages (registry.ui) over the real app and store: what each page says of pushed
images (a derived image, an index), escaping of user data, paging, and who sees what."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from registry.access import Grant
from registry.common import STORE
from registry.ui import reads
from registry.ui.pages import PUSH_TIMES, SHARED_SHOWN, SIZES
from tests.api.helpers import Api
from tests.api.test_auth import basic, write_htpasswd
from tests.documents import OCI_INDEX, OCI_MANIFEST, descriptor, digest_of, image_manifest
from tests.storage.images import tar_of

MakeApi = Callable[..., Awaitable[Api]]
HOSTILE = '<script>alert("label")</script>'
ANNOTATION = "<img src=x onerror=alert(1)>"
BASE_LAYER = b"the base layer " * 64
APP_LAYERS = (b"app layer one", b"app layer two")


def config(arch: str = "amd64", **run: Any) -> bytes:
    return json.dumps({"architecture": arch, "os": "linux", "config": run}).encode()


async def push(
    api: Api, name: str, reference: str, config_blob: bytes, layers: tuple[bytes, ...], **extra: Any
) -> str:
    """Blobs and manifest under `reference` (a tag, or "" for by digest); the digest."""
    for blob in (config_blob, *layers):
        await api.push_blob(name, blob)
    body = image_manifest(config_blob, list(layers), **extra)
    resp = await api.put_manifest(name, reference or digest_of(body), body)
    assert resp.status == 201, await resp.text()
    return resp.headers["Docker-Content-Digest"]


async def push_index(api: Api, name: str, tag: str) -> tuple[str, dict[str, str]]:
    """Two platforms' images by digest, then their index under `tag`."""
    children = {}
    descriptors = []
    for arch in ("amd64", "arm64"):
        blob = config(arch, Cmd=["/bin/sh"])
        body = image_manifest(blob, [BASE_LAYER, arch.encode()])
        for part in (blob, BASE_LAYER, arch.encode()):
            await api.push_blob(name, part)
        resp = await api.put_manifest(name, digest_of(body), body)
        assert resp.status == 201, await resp.text()
        children[f"linux/{arch}"] = digest_of(body)
        descriptors.append(
            {**descriptor(OCI_MANIFEST, body), "platform": {"os": "linux", "architecture": arch}}
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    resp = await api.put_manifest(name, tag, index.encode(), OCI_INDEX)
    assert resp.status == 201, await resp.text()
    return resp.headers["Docker-Content-Digest"], children


async def page(api: Api, path: str, status: int = 200, **headers: str) -> str:
    resp = await api.client.get(path, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "text/html"
    assert re.fullmatch(r"app;dur=[0-9.]+", resp.headers["Server-Timing"])
    return text


def words(html: str) -> str:
    """The page's text, tags dropped and entities read, spaces folded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture
async def pushed(api: Api) -> dict[str, str]:
    """base:1; app:1 built FROM it, app:2 changed; multi:1 an index of two platforms."""
    found = {"base": await push(api, "base", "1", config(), (BASE_LAYER,))}
    found["app1"] = await push(
        api, "app", "1", config(Cmd=["/app"], Env=["A=1"]), (BASE_LAYER, APP_LAYERS[0])
    )
    found["app2"] = await push(
        api,
        "app",
        "2",
        config(Cmd=["/app"], Env=["A=2"], Labels={"version": "2", "hostile": HOSTILE}),
        (BASE_LAYER, APP_LAYERS[1]),
        annotations={"note": ANNOTATION},
    )
    found["multi"], children = await push_index(api, "multi", "1")
    found.update(children)
    return found


async def counted(api: Api, path: str = "/ui/", **headers: str) -> str:
    """The repository list once its sizes, counted in the background, are there."""
    first = words(await page(api, path, **headers))
    assert "being counted" in first and "…" in first
    await api.client.app[SIZES].wait()
    return words(await page(api, path, **headers))


async def test_repositories_page_lists_sizes_and_counts(api: Api, pushed: dict[str, str]) -> None:
    text = await counted(api)
    assert "3 repositories" in text and "as counted at" in text
    # name, tags, manifests, then sizes: app has 2 tags and 2 manifests
    assert re.search(r"app 2 2 [0-9.]+ (B|KiB)", text), text
    assert re.search(r"multi 1 3 ", text), text
    assert "base 1 1" in text


async def test_repository_page_lists_tags(api: Api, pushed: dict[str, str]) -> None:
    html = await page(api, "/ui/r/app")
    text = words(html)
    assert "2 tags" in text
    assert f'href="/ui/r/app/-/i/{pushed["app2"]}"' in html
    assert re.search(r"1 sha256:[0-9a-f]{12} [0-9.]+ (B|KiB) linux/amd64 20\d\d-", text), text
    multi = words(await page(api, "/ui/r/multi"))
    assert "linux/amd64, linux/arm64" in multi


async def test_image_page_of_a_derived_image(api: Api, pushed: dict[str, str]) -> None:
    html = await page(api, "/ui/r/app/-/i/2")
    text = words(html)
    assert pushed["app2"] in text
    assert f"built from base @ {pushed['base']}" in text
    assert f'href="/ui/r/base/-/i/{pushed["base"]}"' in html
    assert '"/app"' in text and "A=2" in text and "version=2" in text
    layers = html[html.index('id="layers"') :]
    # the base layer is also in base and in multi; the app's own layer nowhere else
    assert re.search(r"digest_of_base.*", "") is None
    base_row = layers[layers.index(digest_of(BASE_LAYER)) :].split("</tr>")[0]
    assert 'href="/ui/r/base"' in base_row and 'href="/ui/r/multi"' in base_row
    own_row = layers[layers.index(digest_of(APP_LAYERS[1])) :].split("</tr>")[0]
    assert "/ui/r/" not in own_row
    manifest = unescape(html[html.index('id="manifest"') :].split("</pre>")[0])
    assert '"schemaVersion": 2' in manifest and f'"note": "{ANNOTATION}"' in manifest


async def test_a_layer_in_many_repositories_names_the_first_few(api: Api) -> None:
    for n in range(SHARED_SHOWN + 3):
        await push(api, f"copy/n{n:02d}", "1", config(), (BASE_LAYER,))
    text = words(await page(api, "/ui/r/copy/n00/-/i/1"))
    shown = " , ".join(f"copy/n{n:02d}" for n in range(1, SHARED_SHOWN + 1))  # words() spaces
    assert f"{shown} and 2 more" in text


async def test_image_page_of_an_index_links_its_platforms(api: Api, pushed: dict[str, str]) -> None:
    html = await page(api, "/ui/r/multi/-/i/1")
    assert "2 images" in words(html)
    for platform in ("linux/amd64", "linux/arm64"):
        assert f'href="/ui/r/multi/-/i/{pushed[platform]}"' in html
    child = words(await page(api, f"/ui/r/multi/-/i/{pushed['linux/arm64']}"))
    assert "linux/arm64" in child and "1 tag" not in child


async def test_user_data_is_escaped(api: Api, pushed: dict[str, str]) -> None:
    for path in ("/ui/r/app/-/i/2", "/ui/r/app/-/diff?a=1&b=2", "/ui/r/app/-/history"):
        html = await page(api, path)
        assert "<script>" not in html and "<img" not in html, path
    image = await page(api, "/ui/r/app/-/i/2")
    assert "&lt;script&gt;" in image and "&lt;img src=x onerror=alert(1)&gt;" in image
    # a query string is data too
    form = await page(api, '/ui/r/app/-/diff?a="><script>x</script>')
    assert "<script>x" not in form and "&lt;script&gt;x" in form


async def test_history_graph_draws_lineage(api: Api, pushed: dict[str, str]) -> None:
    html = await page(api, "/ui/r/app/-/history")
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count('r="6"') == 3  # create app, push app:1, push app:2
    assert "push app:2" in svg and "push app:1" in svg and "create app" in svg
    assert f'href="/ui/r/base/-/i/{pushed["base"]}"' in svg  # the lineage edge's base
    assert "<path" in svg
    first = await page(api, "/ui/r/app/-/history?n=1")
    assert "push app:2" in first and "push app:1" not in first
    assert 'href="/ui/r/app/-/history?n=1&amp;skip=1"' in first
    second = await page(api, "/ui/r/app/-/history?n=1&skip=1")
    assert "push app:1" in second and 'skip=0"' in second


async def test_diff_page_says_what_hroot_diff_says(api: Api, pushed: dict[str, str]) -> None:
    text = words(await page(api, "/ui/r/app/-/diff?a=1&b=2"))
    assert f"kept {digest_of(BASE_LAYER)}" in text
    assert f"removed {digest_of(APP_LAYERS[0])}" in text
    assert f"added {digest_of(APP_LAYERS[1])}" in text
    assert "env added: A=2" in text and "env removed: A=1" in text
    assert "label added: version=2" in text
    assert re.search(r"Size 1\.0 KiB -> 1\.1 KiB \(\+[0-9]+ B\)$", text), text
    assert "unchanged" in words(await page(api, "/ui/r/app/-/diff?a=1&b=1"))
    form = await page(api, "/ui/r/app/-/diff")
    assert '<input name="a"' in form
    index = words(await page(api, "/ui/r/multi/-/diff?a=1&b=1", status=400))
    assert "multi-platform index" in index


async def test_diff_page_lists_the_files_of_two_filesystem_views(api: Api) -> None:
    """With both images in the filesystem view (issue 12), the files added, removed and
    changed, as `hroot diff` lists them."""
    old = tar_of({"etc/a": b"one", "etc/b": b"same", "etc/gone": b"x"})
    new = tar_of({"etc/a": b"two!", "etc/b": b"same", "etc/new": b"hello"})
    await push(api, "fsapp", "1", config(), (old,))
    await push(api, "fsapp", "2", config(), (new,))
    assert (await page(api, "/ui/r/fsapp/-/diff?a=1&b=2")).count('id="files"') == 0  # no view
    api.client.app[STORE].build_fs_view("fsapp")
    html = await page(api, "/ui/r/fsapp/-/diff?a=1&b=2")
    rows = re.findall(r'<tr class="(\w+)"><td>\w+</td><td class="mono">([^<]+)</td>', html)
    files = [row for row in rows if row[1].startswith("/")]  # not the layers table
    assert sorted(files) == [("added", "/etc/new"), ("changed", "/etc/a"), ("removed", "/etc/gone")]
    assert "3 B -&gt; 4 B" in html
    assert words(await page(api, "/ui/r/fsapp/-/diff?a=2&b=2")).endswith("Files unchanged")


async def test_pages_are_paged(api: Api, pushed: dict[str, str]) -> None:
    await counted(api)
    first = await page(api, "/ui/?n=2")
    assert words(first).count(" 1 1 ") + words(first).count(" 2 2 ") == 2
    assert 'href="/ui/?n=2&amp;last=base"' in first
    second = words(await page(api, "/ui/?n=2&last=base"))
    assert "multi" in second and "app" not in second.split("Repositories")[1]
    tags = await page(api, "/ui/r/app?n=1")
    assert 'href="/ui/r/app?n=1&amp;last=1"' in tags
    last = await page(api, "/ui/r/app?n=1&last=1")
    assert 'href="/ui/r/app/-/i/2"' in last and "next page" not in last
    await page(api, "/ui/?n=x", status=400)


async def test_a_big_repository_shows_its_tags_first_and_push_times_once_read(
    api: Api, pushed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond PUSHES_LATER tags, a first view does not wait for the push index: it says
    the times are being read, and the next view has them."""
    monkeypatch.setattr(reads, "PUSHES_LATER", 1)
    first = words(await page(api, "/ui/r/app"))
    assert "being read from the history" in first and "…" in first
    await api.client.app[PUSH_TIMES].wait()
    again = words(await page(api, "/ui/r/app"))
    assert "being read" not in again and "…" not in again
    assert re.search(r"\b1 .* 20\d\d-\d\d-\d\d", again)  # a push time on tag 1's row
    small = words(await page(api, "/ui/r/multi"))  # one tag: never put off
    assert "being read" not in small


async def test_a_repository_named_like_a_page_is_its_own(api: Api, pushed: dict[str, str]) -> None:
    """`app/history` and `app/i` are repositories like any other: the pages of `app`
    follow a `/-/`, which no repository name can hold."""
    own = await push(api, "app/history", "7", config(), (b"another layer",))
    await push(api, "app/i", "1", config(), (b"yet another layer",))
    tags = words(await page(api, "/ui/r/app/history"))
    assert "app/history" in tags and "7" in tags and own[:19] in tags
    assert "app/i" in words(await page(api, "/ui/r/app/i"))
    history = await page(api, "/ui/r/app/-/history")
    assert f'href="/ui/r/app/-/i/{pushed["app2"]}"' in history
    assert f'href="/ui/r/app/history/-/i/{own}"' in await page(api, "/ui/r/app/history/-/history")


async def test_errors_are_html_pages(api: Api, pushed: dict[str, str]) -> None:
    assert "404" in await page(api, "/ui/r/nothing", status=404)
    assert "404" in await page(api, "/ui/r/app/-/i/9", status=404)
    await page(api, "/ui/r/app/-/i/bad%20tag", status=400)
    await page(api, "/ui/nowhere", status=404)
    resp = await api.client.get("/ui", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/ui/"


# --- who sees what ---------------------------------------------------------------------


@pytest.fixture
async def secured(make_api: MakeApi, tmp_path: Path) -> Api:
    """Users: alice may pull team/* only, root everything; nobody anonymous."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "a-pw", "root": "r-pw"})
    grants = (
        Grant(("team/*",), frozenset({"pull", "push"}), users=frozenset({"alice"})),
        Grant(("*",), frozenset({"pull", "push", "delete"}), users=frozenset({"root"})),
    )
    api = await make_api(htpasswd=htpasswd, access=grants)
    api.client.session.headers.update(basic("root", "r-pw"))
    await push(api, "secret/base", "1", config(), (BASE_LAYER,))
    await push(api, "team/app", "1", config(), (BASE_LAYER, b"team layer"))
    return api


async def test_a_caller_sees_only_what_it_may_pull(secured: Api) -> None:
    alice = basic("alice", "a-pw")
    listing = await counted(secured, **alice)
    assert "team/app" in listing and "secret" not in listing
    everything = words(await page(secured, "/ui/"))
    assert "secret/base" in everything and "team/app" in everything

    image = await page(secured, "/ui/r/team/app/-/i/1", **alice)
    assert "secret" not in image
    assert "an image of a repository you may not see" in words(image)
    assert "secret" not in await page(secured, "/ui/r/team/app/-/history", **alice)

    hidden = await page(secured, "/ui/r/secret/base", 404, **alice)
    unknown = await page(secured, "/ui/r/secret/nothing", 404, **alice)
    assert hidden.replace("secret/base", "NAME") == unknown.replace("secret/nothing", "NAME")
    for path in ("/-/i/1", "/-/history", "/-/diff?a=1&b=1"):
        await page(secured, f"/ui/r/secret/base{path}", 404, **alice)


async def test_pages_ask_for_basic_credentials(secured: Api) -> None:
    secured.client.session.headers.pop("Authorization")
    for path in ("/ui/", "/ui/r/team/app"):
        resp = await secured.client.get(path)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="hroot"'
        assert resp.content_type == "text/html"
        assert "401" in await resp.text()
    wrong = await secured.client.get("/ui/", headers=basic("alice", "wrong"))
    assert wrong.status == 401 and wrong.content_type == "text/html"
