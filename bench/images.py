"""Images of random content, written once as an OCI image layout on disk.

Every workload pushes images from such a layout: skopeo reads it as `oci:<dir>:<tag>`,
the HTTP client streams its blob files. Layers are real tar archives holding one file
of seeded random bytes (so every run pushes the same, incompressible content), wrapped
in gzip with stored blocks: clients see a compressed layer and do not compress it again.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage import digests

CHUNK = 1 << 20
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TAR_BLOCK = 512


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str  # sha256 of the uncompressed tar, for the config's rootfs


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str
    manifest: bytes
    digest: str
    blobs: tuple[Descriptor, ...]  # config first, then the layers

    def blob_file(self, blob: Descriptor) -> Path:
        return blob_file(self.layout, blob.digest)


def manifest_json(
    config: Descriptor, layers: list[Descriptor], annotations: dict[str, str] | None = None
) -> bytes:
    """An OCI image manifest, serialised the same way every time."""
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = annotations
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def config_json(diff_ids: list[str]) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


class _LayerWriter:
    """Streams tar bytes through gzip (stored blocks) into a file, hashing both forms."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._gzip = zlib.compressobj(0, zlib.DEFLATED, 31)
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._tar_hash.update(data)
        self._emit(self._gzip.compress(data))

    def finish(self) -> tuple[str, str]:
        """Returns (blob digest, diff id)."""
        self._emit(self._gzip.flush())
        return "sha256:" + self._blob_hash.hexdigest(), "sha256:" + self._tar_hash.hexdigest()

    def _emit(self, data: bytes) -> None:
        self._blob_hash.update(data)
        self._out.write(data)
        self.size += len(data)


class Layout:
    """An OCI image layout being filled with random images; save() writes index.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._blobs = path / "blobs" / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._index: list[dict[str, object]] = []

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = str(digests.of(data))
        blob_file(self.path, digest).write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def add_random_layer(self, size: int, seed: int) -> Layer:
        """A layer whose tar holds one file of `size` seeded random bytes."""
        rng = random.Random(seed)
        info = tarfile.TarInfo(f"random-{seed}")
        info.size = size
        partial = self._blobs / f".partial-{seed}"
        with partial.open("wb") as out:
            writer = _LayerWriter(out)
            writer.write(info.tobuf(format=tarfile.PAX_FORMAT))
            for offset in range(0, size, CHUNK):
                writer.write(rng.randbytes(min(CHUNK, size - offset)))
            writer.write(bytes(-size % TAR_BLOCK + 2 * TAR_BLOCK))  # padding, end of archive
            digest, diff_id = writer.finish()
        partial.replace(blob_file(self.path, digest))
        return Layer(Descriptor(LAYER_TYPE, digest, writer.size), diff_id)

    def add_image(self, tag: str, layers: list[Layer]) -> Image:
        config = self.add_blob(config_json([layer.diff_id for layer in layers]), CONFIG_TYPE)
        descriptors = [layer.descriptor for layer in layers]
        body = manifest_json(config, descriptors)
        manifest = self.add_blob(body, MANIFEST_TYPE)
        self._index.append(
            manifest.to_json() | {"annotations": {"org.opencontainers.image.ref.name": tag}}
        )
        return Image(self.path, tag, body, manifest.digest, (config, *descriptors))

    def save(self) -> None:
        index = {"schemaVersion": 2, "manifests": self._index}
        (self.path / "index.json").write_text(json.dumps(index, indent=1))
