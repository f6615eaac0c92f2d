"""Upstream registries for the pull-through proxy's tests: real processes on loopback.

CNCF Distribution (`docker-registry serve CONFIG`), open or behind `auth.htpasswd` (Basic),
and hroot itself with `--htpasswd` (Docker's token flow), each started on a free port and
stopped by its PID; `push` puts a small image into any of them over plain HTTP, as a client
would: blob POST (then PUT when the registry wants one), then the manifest PUT.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.tools import free_port, need_tool, run, running

REPO_ROOT = Path(__file__).resolve().parent.parent
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: distribution
    path: {htpasswd}
"""


@dataclass(frozen=True)
class Registry:
    """A running upstream: its URL and the credentials that push to it (None: anonymous)."""

    url: str  # http://127.0.0.1:PORT
    credentials: tuple[str, str] | None
    log: Path


@dataclass(frozen=True)
class Image:
    """A one-layer OCI image: its manifest and the two blobs it names."""

    manifest: bytes
    config: bytes
    layer: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(self.config): self.config, sha256(self.layer): self.layer}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_image(layer_size: int = 300_001) -> Image:
    """An image of random content (so its digests are its own), `layer_size` bytes of layer."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
    ).encode()
    layer = secrets.token_bytes(layer_size)

    def descriptor(media_type: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
    }
    return Image(json.dumps(manifest, indent=2).encode(), config, layer)


def _request(
    method: str, url: str, credentials: tuple[str, str] | None, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str]]:
    if credentials is not None:
        basic = base64.b64encode(":".join(credentials).encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {url}: {e.code} {e.read()[:500]!r}") from None


def push(registry: Registry, name: str, image: Image, *tags: str) -> None:
    """Push `image` as `name:tag` for each tag, with Basic credentials when the registry has
    them (hroot takes them on every request, as Distribution's htpasswd mode does)."""
    base = f"{registry.url}/v2/{name}"
    for digest, data in image.blobs.items():
        # A session, then its body in one PUT: Distribution takes no body on the POST.
        status, headers = _request("POST", f"{base}/blobs/uploads/", registry.credentials)
        assert status == 202, f"blob {digest}: POST {status}"
        location = urllib.parse.urljoin(registry.url, headers["Location"])
        sep = "&" if "?" in location else "?"
        status, _ = _request(
            "PUT",
            f"{location}{sep}digest={digest}",
            registry.credentials,
            data,
            **{"Content-Type": "application/octet-stream"},
        )
        assert status == 201, f"blob {digest}: {status}"
    for tag in tags:
        status, _ = _request(
            "PUT",
            f"{base}/manifests/{tag}",
            registry.credentials,
            image.manifest,
            **{"Content-Type": OCI_MANIFEST},
        )
        assert status == 201, f"manifest {name}:{tag}: {status}"


def htpasswd(path: Path, user: str, password: str) -> Path:
    """A bcrypt htpasswd file of one user, written by `htpasswd -Bbc` (apache2-utils)."""
    run(need_tool("htpasswd"), "-Bbc", path, user, password)
    return path


def _answers(url: str) -> bool:
    """Up: /v2/ answers 200, or 401 asking for credentials."""
    try:
        with urllib.request.urlopen(url + "/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def distribution(home: Path, credentials: tuple[str, str] | None = None) -> Iterator[Registry]:
    """`docker-registry serve` on a free loopback port with its data in `home`; behind
    `auth.htpasswd` (Basic) with one user when `credentials` are given."""
    command = need_tool("docker-registry")
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = DISTRIBUTION_CONFIG.format(data=home / "data", port=port)
    if credentials is not None:
        config += HTPASSWD_AUTH.format(htpasswd=htpasswd(home / "htpasswd", *credentials))
    (home / "config.yml").write_text(config)
    registry = Registry(f"http://127.0.0.1:{port}", credentials, home / "distribution.log")
    with running(
        [command, "serve", home / "config.yml"],
        log=registry.log,
        ready=lambda: _answers(registry.url),
        what="docker-registry",
    ):
        yield registry


@contextmanager
def hroot(
    home: Path, credentials: tuple[str, str] | None = None, *flags: str
) -> Iterator[Registry]:
    """`python -m registry serve` on a free loopback port with its repository in `home`;
    with `--htpasswd` of one user (Docker's token flow) when `credentials` are given."""
    need_tool("git")
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if credentials is not None:
        flags += ("--htpasswd", str(htpasswd(home / "htpasswd", *credentials)))
    registry = Registry(f"http://127.0.0.1:{port}", credentials, home / "hroot.log")
    command: list[str | Path] = [
        sys.executable, "-m", "registry", "serve",
        "--listen", f"127.0.0.1:{port}", "--data", home / "hroot.git", *flags,
    ]  # fmt: skip
    with running(
        command,
        log=registry.log,
        ready=lambda: _answers(registry.url),
        what="hroot",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
    ):
        yield registry
