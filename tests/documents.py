"""Image documents for the tests: digests, descriptors, image manifests and indexes."""

from __future__ import annotations

import json
from typing import Any

from storage import digests
from storage.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

__all__ = [
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "descriptor",
    "digest_of",
    "image_manifest",
    "index_manifest",
]

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return str(digests.of(data, algorithm))


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    """An OCI image manifest; `extra` adds fields (subject=, artifactType=…), None ones left out."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        **{key: value for key, value in extra.items() if value is not None},
    }
    return json.dumps(document).encode()


def index_manifest(children: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, child) for child in children],
        }
    ).encode()
