"""Helpers for the store's tests: build images, run the git command line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import Store, digests, names
from tests.documents import OCI_INDEX, OCI_MANIFEST, descriptor, image_manifest


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


def age(path: Path, seconds: float) -> None:
    """Make `path` look last changed `seconds` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def age_objects(store: Store, seconds: float = 10) -> None:
    """Make every object `seconds` old: git prune counts whole seconds, and never takes
    what this second wrote."""
    for found in (store.path / "objects").rglob("*"):
        if found.is_file():
            age(found, seconds)


def disk_bytes(path: Path) -> int:
    """The bytes of every file under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob of `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def edit_tip(store: Store, repo: str, files: dict[str, bytes | None]) -> str:
    """Commit on repo's branch its tip with `files` (paths in the layout) set to these
    bytes, or removed where None, by hand with git plumbing as a person could; the commit.

    Nothing checks what is written: this is how the tests make a damaged registry.
    """
    branch = names.branch_ref(repo).decode()
    env = {**os.environ, "GIT_INDEX_FILE": str(store.path / "edit-tip.index")}

    def plumbing(*args: str, data: bytes | None = None) -> str:
        done = subprocess.run(
            ["git", "--git-dir", str(store.path), *args], input=data, env=env, capture_output=True
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout.decode().strip()

    plumbing("read-tree", branch)
    lines = [
        f"100644 {plumbing('hash-object', '-w', '--stdin', data=data)}\t{path}"
        if data is not None
        else f"0 {'0' * 40}\t{path}"  # mode 0: remove the entry
        for path, data in files.items()
    ]
    plumbing("update-index", "--index-info", data="\n".join(lines).encode() + b"\n")
    tree = plumbing("write-tree")
    commit = plumbing("commit-tree", tree, "-p", branch, "-m", "edited by hand")
    plumbing("update-ref", branch, commit)
    os.unlink(env["GIT_INDEX_FILE"])
    return commit


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


def push_index(store: Store, repo: str, tag: str) -> tuple[str, Image, Image]:
    """A two-platform index (amd64, arm64), its children pushed by digest first."""
    amd64 = push_image(store, repo, tag=None)
    arm64 = push_image(store, repo, tag=None)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**descriptor(OCI_MANIFEST, image.manifest), "platform": platform}
                for image, platform in (
                    (amd64, {"os": "linux", "architecture": "amd64"}),
                    (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
                )
            ],
        }
    ).encode()
    return store.put_manifest(repo, tag, body).digest, amd64, arm64


def image_config(platform: str = "linux/amd64", **run: Any) -> dict[str, Any]:
    """An image config: `platform` as os/arch[/variant], `run` its `config` (Cmd=, Env=…)."""
    os_, arch, *variant = platform.split("/")
    document: dict[str, Any] = {"os": os_, "architecture": arch, "config": run}
    if variant:
        document["variant"] = variant[0]
    return document


def push_layers(
    store: Store, repo: str, tag: str | None, config: dict[str, Any], layers: list[bytes]
) -> str:
    """Upload a config and these layers, then their manifest under `tag` (None: by digest);
    the manifest's digest."""
    config_bytes = json.dumps(config).encode()
    for blob in [config_bytes, *layers]:
        put(store, repo, blob)
    manifest = image_manifest(config_bytes, layers)
    store.put_manifest(repo, tag or str(digests.of(manifest)), manifest)
    return str(digests.of(manifest))


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar archive of these files: what a layer holds before compression."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
