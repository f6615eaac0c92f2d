"""Helpers for the store's tests: build images, run the git command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass

from storage import Store, digests
from tests.documents import image_manifest


def git(store: Store, *args: str, input_text: str | None = None) -> str:
    """Run the git command line on the store's repository; fail the test if git does."""
    result = subprocess.run(
        ["git", "--git-dir", str(store.path), *args],
        capture_output=True,
        text=True,
        input=input_text,
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def assert_fsck_clean(store: Store) -> None:
    result = subprocess.run(
        ["git", "--git-dir", str(store.path), "fsck", "--full", "--strict"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


@dataclass
class Image:
    repo: str
    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def digest(self) -> str:
        return str(digests.of(self.manifest))


def put(store: Store, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    digest = str(digests.of(data, algorithm))
    store.put_blob(repo, digest, io.BytesIO(data), len(data))
    return digest


def push_image(
    store: Store, repo: str, tag: str | None = "v1", layers: int = 2, layer_size: int = 1000
) -> Image:
    """Upload a config and random layers, then put their manifest (under `tag`, or by digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(4).hex()}).encode()
    blobs = [os.urandom(layer_size) for _ in range(layers)]
    for data in [config, *blobs]:
        put(store, repo, data)
    manifest = image_manifest(config, blobs)
    image = Image(repo, config, blobs, manifest)
    store.put_manifest(repo, tag or image.digest, manifest)
    return image
