"""The small blob that stands at `blobs/<alg>/<hex>` for a layer stored as files
(docs/format.md §10), as a git-lfs pointer stands for its file.

A pointer names its own layer's digest. That is what makes it one: a client can push
a blob that reads like a pointer, but it is stored under the digest of those bytes,
and no blob can name its own sha256. So a blob is taken for a pointer only where it
stands at the path of the digest it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage import digests
from storage.digests import Digest

MAGIC = b"hroot layer stored as files, docs/format.md section 10\n"
MAX_SIZE = 512  # no pointer is longer; a longer blob is never read to find out
_FIELDS = re.compile(
    rb"digest (?P<digest>[a-z0-9]+:[0-9a-f]+)\nsize (?P<size>[0-9]+)\n"
    rb"index (?P<index>[0-9a-f]{40})\ntree (?P<tree>[0-9a-f]{40})\n"
)


@dataclass(frozen=True)
class Pointer:
    digest: Digest  # of the layer
    size: int  # of the layer
    index: bytes  # hex id of the tar map's index blob (storage.tarsplit.Index)
    tree: bytes  # hex id of the tree that holds every object the layer needs

    def encode(self) -> bytes:
        return MAGIC + b"digest %s\nsize %d\nindex %s\ntree %s\n" % (
            str(self.digest).encode(),
            self.size,
            self.index,
            self.tree,
        )


def parse(data: bytes) -> Pointer | None:
    """The pointer `data` is, or None if it is none."""
    if not data.startswith(MAGIC):
        return None
    match = _FIELDS.fullmatch(data, len(MAGIC))
    if match is None:
        return None
    digest = digests.parse_or_none(match["digest"].decode())
    if digest is None:
        return None
    return Pointer(digest, int(match["size"]), match["index"], match["tree"])
