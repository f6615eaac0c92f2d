"""OCI image layouts on disk: check one blob by blob, find a tag, add an image index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.documents import digest_of

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = {OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}


def read_blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """The bytes of a descriptor's blob, checked against its digest and size."""
    algorithm, hexdigest = descriptor["digest"].split(":", 1)
    path = layout / "blobs" / algorithm / hexdigest
    assert path.is_file(), f"{descriptor['digest']} is missing from the layout {layout}"
    data = path.read_bytes()
    assert hashlib.new(algorithm, data).hexdigest() == hexdigest, f"{path} does not hash right"
    assert len(data) == descriptor["size"], (
        f"{path}: {len(data)} bytes, descriptor says {descriptor}"
    )
    return data


def read_index(layout: Path) -> dict[str, Any]:
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index: dict[str, Any] = json.loads((layout / "index.json").read_bytes())
    assert index["schemaVersion"] == 2, index
    return index


def tagged(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor that index.json gives for `tag` (exactly one)."""
    found = [
        d
        for d in read_index(layout)["manifests"]
        if (d.get("annotations") or {}).get(REF_NAME) == tag
    ]
    assert len(found) == 1, f"tag {tag!r} in {layout}/index.json: {found}"
    return found[0]


def check_descriptor(layout: Path, descriptor: dict[str, Any]) -> None:
    """Check a manifest or index and everything it references, recursively, blob by blob."""
    body = json.loads(read_blob(layout, descriptor))
    media_type = descriptor["mediaType"]
    if media_type in INDEX_TYPES:
        assert body["manifests"], f"empty index {descriptor}"
        for child in body["manifests"]:
            check_descriptor(layout, child)
    elif media_type in MANIFEST_TYPES:
        for blob in [body["config"], *body["layers"]]:
            read_blob(layout, blob)
    else:
        raise AssertionError(f"unexpected media type in {descriptor}")


def check_layout(layout: Path, tag: str) -> str:
    """Check that `layout` is a complete OCI layout holding `tag`; return the tag's digest."""
    for descriptor in read_index(layout)["manifests"]:
        check_descriptor(layout, descriptor)
    return str(tagged(layout, tag)["digest"])


def write_blob(layout: Path, data: bytes) -> str:
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.write_bytes(data)
    return digest


def add_index(layout: Path, tag: str, members: list[str]) -> str:
    """Tag, in `layout`, an OCI image index of the images tagged `members`; return its digest.

    Each entry's platform comes from its image config, so an index of an amd64 and an
    arm64 image is a real multi-arch image.
    """
    entries = []
    for member in members:
        descriptor = tagged(layout, member)
        manifest = json.loads(read_blob(layout, descriptor))
        config = json.loads(read_blob(layout, manifest["config"]))
        entries.append(
            {
                "mediaType": descriptor["mediaType"],
                "digest": descriptor["digest"],
                "size": descriptor["size"],
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }
        )
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = write_blob(layout, body)
    index = read_index(layout)
    index["manifests"].append(
        {
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": len(body),
            "annotations": {REF_NAME: tag},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return digest
