"""OCI digests: parsing `alg:hex`, and the hashers that compute them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from storage.errors import DigestInvalid

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def matches(self, hasher: Hasher) -> bool:
        return hasher.hexdigest() == self.hex


def parse(text: str) -> Digest:
    """Parse `sha256:<64 hex>` or `sha512:<128 hex>`; DigestInvalid otherwise."""
    match = _DIGEST.fullmatch(text) if isinstance(text, str) else None
    if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
        raise DigestInvalid(text, message="invalid digest")
    return Digest(match.group(1), match.group(2))


def parse_or_none(text: str) -> Digest | None:
    """`parse`, with None for what is not a digest (as a stored document may hold)."""
    try:
        return parse(text)
    except DigestInvalid:
        return None


def is_digest(reference: str) -> bool:
    """True when a manifest reference looks like a digest rather than a tag."""
    return ":" in reference


def of(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())
