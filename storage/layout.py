"""The OCI image layout inside each commit's tree (DESIGN.md §2.2), read and written.

A commit's tree is `oci-layout`, `index.json` and `blobs/<alg>/<hex>`; a staging
tree is just `blobs/<alg>/<hex>`. Parsed trees and index files are cached by their
git object id, which never changes meaning, so the cache needs no invalidation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, Tree

from storage.digests import Digest
from storage.index import Index
from storage.objects import add_object

TREE_MODE = 0o040000
FILE_MODE = 0o100644
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class ObjectCache:
    """Parsed git trees and JSON blobs, by object id (immutable, so never stale).

    Bounded by a rough count of entries held (a tree's entries, an index's
    manifests), since one tree of a big repository can hold 100,000 of them.
    """

    def __init__(self, objects: DiskObjectStore, budget: int = 1_000_000) -> None:
        self._objects = objects
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[tuple[str, bytes], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def tree(self, oid: bytes) -> Tree:
        return self.get("tree", oid, lambda: self._objects[oid], len)

    def raw(self, oid: bytes) -> bytes:
        """A small object's bytes, cached (a manifest is read by every pull of it)."""
        return self.get("raw", oid, lambda: self.raw_uncached(oid), _bytes_cost)

    def raw_uncached(self, oid: bytes) -> bytes:
        return self._objects[oid].as_raw_string()

    def get(
        self, kind: str, oid: bytes, load: Callable[[], Any], cost: Callable[[Any], int] = len
    ) -> Any:
        """The value `load` gives for object `oid`, read once per `kind` while it fits."""
        key = (kind, oid)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = load()
        self.put(kind, oid, value, cost(value))
        return value

    def put(self, kind: str, oid: bytes, value: Any, cost: int) -> None:
        with self._lock:
            if (kind, oid) not in self._items:
                self._items[(kind, oid)] = (value, max(1, cost))
                self._used += max(1, cost)
            while self._used > self._budget and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self._used -= dropped


def _bytes_cost(data: bytes) -> int:
    return len(data) // 100  # about what a parsed tree entry costs


def entry(cache: ObjectCache, tree_oid: bytes | None, *path: bytes) -> bytes | None:
    """The object id at `path` under tree `tree_oid`, or None."""
    oid = tree_oid
    for name in path:
        if oid is None:
            return None
        tree = cache.tree(oid)
        if name not in tree:
            return None
        oid = tree[name][1]
    return oid


def find_blob(cache: ObjectCache, tree_oid: bytes | None, digest: Digest) -> bytes | None:
    return entry(cache, tree_oid, b"blobs", digest.algorithm.encode(), digest.hex.encode())


def blob_digests(cache: ObjectCache, tree_oid: bytes | None) -> dict[Digest, bytes]:
    """Every `blobs/<alg>/<hex>` under a tree, with its git object id."""
    found: dict[Digest, bytes] = {}
    blobs = entry(cache, tree_oid, b"blobs")
    if blobs is None:
        return found
    for alg in cache.tree(blobs).iteritems():
        for item in cache.tree(alg.sha).iteritems():
            found[Digest(alg.path.decode(), item.path.decode())] = item.sha
    return found


def read_index(cache: ObjectCache, tree_oid: bytes | None) -> Index:
    oid = entry(cache, tree_oid, b"index.json")
    if oid is None:
        return Index.empty()
    return cache.get("index", oid, lambda: Index.parse(cache.raw_uncached(oid)), len)


class TreeWriter:
    """Builds a new layout tree from an old one, writing only what changed."""

    def __init__(self, objects: DiskObjectStore, cache: ObjectCache) -> None:
        self._objects = objects
        self._cache = cache

    def layout(
        self,
        base: bytes | None,
        index: Index,
        add: dict[Digest, bytes] | None = None,
        remove: Iterable[Digest] = (),
    ) -> bytes:
        """The id of layout `base` with blobs added/removed and `index` as its index.json."""
        root = self._with_blobs(base, add or {}, set(remove))
        self._set(root, b"oci-layout", self._add(Blob.from_string(OCI_LAYOUT)), FILE_MODE)
        index_blob = Blob.from_string(index.encode())
        self._set(root, b"index.json", self._add(index_blob), FILE_MODE)
        self._cache.put("index", index_blob.id, index, len(index))  # the next push starts here
        return self._add(root)

    def staging(
        self,
        base: bytes | None,
        add: dict[Digest, bytes] | None = None,
        remove: Iterable[Digest] = (),
    ) -> bytes | None:
        """The id of staging tree `base` with blobs added/removed; None when left empty."""
        root = self._with_blobs(base, add or {}, set(remove))
        return self._add(root) if len(root) else None

    def _with_blobs(
        self, base: bytes | None, add: dict[Digest, bytes], remove: set[Digest]
    ) -> Tree:
        root = self._copy(base)
        self._set(
            root,
            b"blobs",
            self._edit_blobs(entry(self._cache, base, b"blobs"), add, remove),
            TREE_MODE,
        )
        return root

    def _edit_blobs(
        self, base: bytes | None, add: dict[Digest, bytes], remove: set[Digest]
    ) -> bytes | None:
        if not add and not remove:
            return base
        tree = self._copy(base)
        for alg in {d.algorithm for d in add} | {d.algorithm for d in remove}:
            key = alg.encode()
            sub = self._copy(tree[key][1] if key in tree else None)
            for digest in remove:
                if digest.algorithm == alg and digest.hex.encode() in sub:
                    del sub[digest.hex.encode()]
            for digest, oid in add.items():
                if digest.algorithm == alg:
                    sub[digest.hex.encode()] = (FILE_MODE, oid)
            self._set(tree, key, self._add(sub) if len(sub) else None, TREE_MODE)
        return self._add(tree) if len(tree) else None

    def _copy(self, oid: bytes | None) -> Tree:
        copy = Tree()
        if oid is not None:
            for item in self._cache.tree(oid).iteritems():
                copy.add(item.path, item.mode, item.sha)
        return copy

    @staticmethod
    def _set(tree: Tree, name: bytes, oid: bytes | None, mode: int) -> None:
        if oid is not None:
            tree[name] = (mode, oid)
        elif name in tree:
            del tree[name]

    def _add(self, obj: Tree | Blob) -> bytes:
        return add_object(self._objects, obj)
