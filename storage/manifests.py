"""Parsing and checking manifests: what a manifest is, and what it needs to be present."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from storage import digests
from storage.digests import Digest
from storage.errors import ManifestInvalid, ManifestTooLarge, Unsupported

MAX_MANIFEST_SIZE = 4 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

# The OCI "empty" config of artifacts, `{}`: known content, so the store can supply it.
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = digests.of(EMPTY_CONFIG)

_PLATFORM_PART = re.compile(r"[^\s/()]+")

_NON_DISTRIBUTABLE = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
)


@dataclass(frozen=True)
class Reference:
    digest: Digest
    size: int
    media_type: str
    platform: str | None = None  # os/arch[/variant] of an index's entry, if it says


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[Reference] = field(default_factory=list)  # must be in the repository
    children: list[Reference] = field(default_factory=list)  # manifests an index lists
    layers: list[Digest] = field(default_factory=list)  # every layer, in order
    subject: Digest | None = None
    artifact_type: str | None = None  # for an image without one, its config's media type
    annotations: dict[str, str] = field(default_factory=dict)


def load_json(body: bytes) -> Any:
    """json.loads for bytes a client sent: every way it can fail is a ValueError, also
    nesting deeper than Python's parser goes (`[[[…]]]` in 4 MB raised RecursionError)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse(
    body: bytes, media_type: str | None = None, max_size: int = MAX_MANIFEST_SIZE
) -> ParsedManifest:
    """Check a manifest's shape and say what it references.

    `media_type` is the Content-Type the client sent, if any; the body's own
    `mediaType` wins when present, and the two must agree.
    """
    if len(body) > max_size:
        raise ManifestTooLarge(f"{len(body)} bytes; the limit is {max_size}")
    try:
        document = load_json(body)
    except ValueError as e:
        raise ManifestInvalid(f"not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("a manifest is a JSON object")
    kind = _media_type(document, media_type)
    if kind in DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
        raise Unsupported("Docker schema1 manifests", message="schema1 manifests are not supported")
    if document.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    subject = document.get("subject")
    parsed = ParsedManifest(
        media_type=kind,
        subject=_descriptor(subject, "subject").digest if subject is not None else None,
        artifact_type=_optional_str(document, "artifactType"),
        annotations=_annotations(document),
    )
    if kind in INDEX_TYPES:
        parsed.children = _descriptors(document, "manifests", required=True)
    elif kind in IMAGE_TYPES:
        config = _descriptor(document.get("config"), "config")
        layers = _descriptors(document, "layers", required=kind == DOCKER_MANIFEST)
        parsed.layers = [layer.digest for layer in layers]
        parsed.blobs = [config] + [layer for layer in layers if not _non_distributable(layer)]
        if parsed.artifact_type is None:
            parsed.artifact_type = config.media_type  # what the referrers API reports
    else:
        raise ManifestInvalid(f"unknown manifest media type {kind!r}")
    return parsed


def _media_type(document: dict[str, Any], header: str | None) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if header:
        header = header.split(";")[0].strip()
    if declared and header and header != declared and header not in DOCKER_SCHEMA1:
        raise ManifestInvalid(f"Content-Type {header!r} does not match mediaType {declared!r}")
    if declared or header:
        return declared or header  # type: ignore[return-value]
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[0]
    raise ManifestInvalid("cannot tell the manifest's media type")


def _descriptors(document: dict[str, Any], key: str, required: bool) -> list[Reference]:
    items = document.get(key)
    if items is None and not required:
        return []
    if not isinstance(items, list):
        raise ManifestInvalid(f"{key} must be a list of descriptors")
    return [_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items)]


def _descriptor(item: Any, where: str) -> Reference:
    if not isinstance(item, dict):
        raise ManifestInvalid(f"{where} must be a descriptor")
    size, media_type = item.get("size"), item.get("mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType must be a string")
    try:
        digest = digests.parse(item.get("digest"))
    except Exception:
        raise ManifestInvalid(f"{where}.digest is not a valid digest") from None
    return Reference(digest, size, media_type, platform(item.get("platform")))


def platform(value: Any) -> str | None:
    """`os/arch[/variant]`, as lineage trailers name a platform; None for a platform that
    is missing or not words (the spec's own values never have spaces or parentheses)."""
    if not isinstance(value, dict):
        return None
    parts = [value.get("os"), value.get("architecture")]
    if value.get("variant"):
        parts.append(value["variant"])
    if not all(isinstance(part, str) and _PLATFORM_PART.fullmatch(part) for part in parts):
        return None
    return "/".join(parts)  # type: ignore[arg-type]


def _optional_str(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value


def _annotations(document: dict[str, Any]) -> dict[str, str]:
    value = document.get("annotations") or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestInvalid("annotations must map strings to strings")
    return value


def _non_distributable(layer: Reference) -> bool:
    """Foreign layers live elsewhere (their `urls`); the registry need not hold them."""
    return "nondistributable" in layer.media_type or layer.media_type in _NON_DISTRIBUTABLE
