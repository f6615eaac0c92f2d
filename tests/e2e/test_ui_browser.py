"""The web pages in a real browser: Debian's chromium, headless, against `hroot serve`.

The DOM chromium builds must hold what was pushed, and screenshots of the repository
list, an image page and a history graph are written to tests/artifacts/ui/latest/
(git-ignored; CI keeps them as artifacts; tests/artifacts/ui/*.png are committed ones).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, Hroot, for_one_test, serving
from .tools import need_tool, output

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO_ROOT / "tests" / "artifacts" / "ui" / "latest"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BASE_LAYER = b"the base layer of the browser test " * 100


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


def _request(method: str, url: str, body: bytes, content_type: str) -> str:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201, response.status
        return str(response.headers["Docker-Content-Digest"])


def push(
    server: Hroot, name: str, reference: str | None, layers: list[bytes], **run: object
) -> str:
    """An image of `layers` over the API, under a tag or (reference None) by digest."""
    arch = str(run.pop("arch", "amd64"))
    config = json.dumps({"architecture": arch, "os": "linux", "config": run}).encode()
    for blob in (config, *layers):
        url = f"http://{server.host}/v2/{name}/blobs/uploads/?digest={_digest(blob)}"
        _request("POST", url, blob, "application/octet-stream")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", x) for x in layers],
        }
    ).encode()
    url = f"http://{server.host}/v2/{name}/manifests/{reference or _digest(manifest)}"
    return _request("PUT", url, manifest, OCI_MANIFEST)


def push_index(server: Hroot, name: str, tag: str, children: dict[str, bytes]) -> None:
    descriptors = []
    for arch, layer in children.items():
        digest = push(server, name, None, [BASE_LAYER, layer], arch=arch)
        size = len(_get(server, f"/v2/{name}/manifests/{digest}"))
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    url = f"http://{server.host}/v2/{name}/manifests/{tag}"
    _request("PUT", url, json.dumps(index).encode(), OCI_INDEX)


def _get(server: Hroot, path: str) -> bytes:
    request = urllib.request.Request(
        f"http://{server.host}{path}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hroot]:
    """A server of its own with a base, two images built on it, and a two-platform index."""
    root = tmp_path_factory.mktemp("ui")
    with serving(root / "hroot.git", root / "server.log") as server:
        push(server, "library/base", "1", [BASE_LAYER], Cmd=["/bin/sh"])
        push(server, "shop/web", "1", [BASE_LAYER, b"web 1"], Cmd=["/web"], Env=["MODE=one"])
        push(server, "shop/web", "2", [BASE_LAYER, b"web 2"], Cmd=["/web"], Labels={"v": "2"})
        push(server, "shop/web", "latest", [BASE_LAYER, b"web 2"], Cmd=["/web"], Labels={"v": "2"})
        push_index(server, "shop/multi", "1", {"amd64": b"amd64 bits", "arm64": b"arm64 bits"})
        yield server


@pytest.fixture
def hroot(browsed: Hroot) -> Iterator[Hroot]:
    yield from for_one_test(browsed)


def chromium(*args: str) -> str:
    """Headless chromium as root in a container: no sandbox, no GPU, its profile in /tmp."""
    browser = need_tool("chromium")
    return output(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,900",
        *args,
        timeout=120,
    )


def dom(server: Hroot, path: str) -> str:
    return chromium("--dump-dom", f"http://{server.host}{path}")


def screenshot(server: Hroot, path: str, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / name
    target.unlink(missing_ok=True)
    chromium(f"--screenshot={target}", f"http://{server.host}{path}")
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000, f"{target}: not a screenshot"
    return target


def test_repository_list(hroot: Hroot) -> None:
    page = dom(hroot, "/ui/")
    assert "3 repositories you may pull" in page
    deadline = time.monotonic() + 30
    while "as counted at" not in page:  # sizes are counted in the background
        assert time.monotonic() < deadline, page
        time.sleep(0.2)
        page = dom(hroot, "/ui/")
    for name in ("library/base", "shop/web", "shop/multi"):
        assert f'<a href="/ui/r/{name}">{name}</a>' in page
    screenshot(hroot, "/ui/", "repositories.png")


def test_tags_and_image_pages(hroot: Hroot) -> None:
    tags = dom(hroot, "/ui/r/shop/web")
    assert "3 tags" in tags and "linux/amd64" in tags
    image = dom(hroot, "/ui/r/shop/web/-/i/2")
    assert 'href="/ui/r/library/base/-/i/sha256:' in image  # built from the base
    assert 'href="/ui/r/library/base"' in image  # the shared layer's other holder
    assert "v=2" in image and '"schemaVersion": 2' in image
    screenshot(hroot, "/ui/r/shop/web/-/i/2", "image.png")
    index = dom(hroot, "/ui/r/shop/multi/-/i/1")
    assert "linux/amd64" in index and "linux/arm64" in index and "2 images" in index


def test_history_graph(hroot: Hroot) -> None:
    page = dom(hroot, "/ui/r/shop/web/-/history")
    graph = page[page.index("<svg") : page.index("</svg>")]
    assert graph.count("<circle") >= 5  # create, three pushes, and the base merged in
    assert "push shop/web:latest" in graph and "built from library/base@" in graph
    screenshot(hroot, "/ui/r/shop/web/-/history", "history.png")


def test_diff(hroot: Hroot) -> None:
    page = dom(hroot, "/ui/r/shop/web/-/diff?a=1&b=2")
    assert "env removed: MODE=one" in page and "label added: v=2" in page
