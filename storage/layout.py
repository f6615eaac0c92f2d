"""The OCI image layout inside each commit's tree (docs/format.md §3), read and written.

A commit's tree is `oci-layout`, `index.json` and `blobs/<alg>/<hex>`; a staging
tree is just `blobs/<alg>/<hex>`. A layer stored as files (§10) has a pointer at its
`blobs/` path, the tree of its objects at `.hroot/layers/<alg>/<hex>` in the same tree
(so that they are reachable), and in a layout a `.gitattributes` line that has
`git archive` rebuild it. Parsed trees and index files are cached by their
git object id, which never changes meaning, so the cache needs no invalidation.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import parse_tree

from storage import objects, pointers
from storage.digests import Digest
from storage.index import Index
from storage.objects import ObjectBatch, read_named
from storage.pointers import Pointer

TREE_MODE = 0o040000
FILE_MODE = 0o100644
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
HIDDEN = b".hroot"  # what a layer stored as files needs, kept reachable (§10)
LAYERS = b"layers"
ATTRIBUTES = b".gitattributes"
ATTRIBUTES_HEAD = (
    b"# hroot, docs/format.md section 10: layers stored as files, rebuilt by git archive\n"
    b"/.hroot export-ignore\n/.gitattributes export-ignore\n"
)


class GitTree:
    """A tree kept the way git writes it: entries in git's order, each with its bytes.

    `blobs/sha256` of a big repository holds 100,000 entries and every push edits
    it: here an edit is a bisect and a join (dulwich re-sorts the entries and feeds
    zlib one entry at a time, about 3 ms per 1,000 entries).
    """

    __slots__ = ("_entries", "_keys", "_raws")

    def __init__(
        self, keys: list[bytes], raws: list[bytes], entries: dict[bytes, tuple[int, bytes]]
    ) -> None:
        self._keys = keys  # git's sort keys: a subtree's name has "/" appended
        self._raws = raws  # each entry as written: "<mode> <name>\0<20-byte id>"
        self._entries = entries  # name -> (mode, hex id)

    @classmethod
    def parse(cls, raw: bytes) -> GitTree:
        tree = cls([], [], {})
        for name, mode, hexsha in parse_tree(raw, 20):
            tree._keys.append(_sort_key(name, mode))
            tree._raws.append(_entry_bytes(name, mode, hexsha))
            tree._entries[name] = (mode, hexsha)
        return tree

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: bytes) -> bool:
        return name in self._entries

    def __getitem__(self, name: bytes) -> tuple[int, bytes]:
        return self._entries[name]

    def items(self) -> Iterator[tuple[bytes, tuple[int, bytes]]]:
        """Each entry as (name, (mode, hex id)), in no particular order."""
        return iter(self._entries.items())

    def edited(self, changes: dict[bytes, tuple[int, bytes] | None]) -> GitTree:
        """A copy with entries set to (mode, id), or removed where None."""
        keys, raws, entries = list(self._keys), list(self._raws), dict(self._entries)
        for name, value in changes.items():
            old = entries.pop(name, None)
            if old is not None:
                at = bisect_left(keys, _sort_key(name, old[0]))
                del keys[at], raws[at]
            if value is not None:
                key = _sort_key(name, value[0])
                at = bisect_left(keys, key)
                keys.insert(at, key)
                raws.insert(at, _entry_bytes(name, *value))
                entries[name] = value
        return GitTree(keys, raws, entries)

    def encode(self) -> bytes:
        return b"".join(self._raws)


def _sort_key(name: bytes, mode: int) -> bytes:
    return name + b"/" if mode == TREE_MODE else name


def _entry_bytes(name: bytes, mode: int, hexsha: bytes) -> bytes:
    return b"%o %s\x00" % (mode, name) + bytes.fromhex(hexsha.decode())


class ObjectCache:
    """Parsed git trees and JSON blobs, by object id (immutable, so never stale).

    Bounded by a rough count of entries held (a tree's entries, an index's
    manifests), since one tree of a big repository can hold 100,000 of them.
    """

    def __init__(self, objects: DiskObjectStore, budget: int = 400_000) -> None:
        self._objects = objects
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[tuple[str, bytes], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def tree(self, oid: bytes) -> GitTree:
        return self.get("tree", oid, lambda: GitTree.parse(read_named(self._objects, oid)[1]), len)

    def raw(self, oid: bytes) -> bytes:
        """A small object's bytes, cached (a manifest is read by every pull of it)."""
        return self.get("raw", oid, lambda: self.raw_uncached(oid), _bytes_cost)

    def raw_uncached(self, oid: bytes) -> bytes:
        return read_named(self._objects, oid)[1]

    def pointer(self, oid: bytes, digest: Digest) -> Pointer | None:
        """The pointer (§10) that blob `oid`, stored at `digest`'s path, is; None if it is
        the blob itself. Only a blob small enough to be one is read to find out."""

        def load() -> Pointer | None:
            with objects.open_blob(self._objects, oid.decode()) as reader:
                small = reader.size <= pointers.MAX_SIZE
                return pointers.parse(bytes(reader.read(reader.size))) if small else None

        found = self.get("pointer", oid, load, one)
        return found if found is not None and found.digest == digest else None

    def holds(self, kind: str, oid: bytes) -> bool:
        with self._lock:
            return (kind, oid) in self._items

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


def one(_: object) -> int:
    """The cost in ObjectCache of an entry that holds one small value."""
    return 1


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


def blobs(cache: ObjectCache, tree_oid: bytes | None) -> dict[Digest, bytes]:
    """Every blob of a layout or staging tree: its digest and its git object id."""
    found: dict[Digest, bytes] = {}
    root = entry(cache, tree_oid, b"blobs")
    if root is None:
        return found
    for algorithm, (_, by_hex) in cache.tree(root).items():
        for hex_name, (_, oid) in cache.tree(by_hex).items():
            found[Digest(algorithm.decode(), hex_name.decode())] = oid
    return found


def read_index(cache: ObjectCache, tree_oid: bytes | None) -> Index:
    oid = entry(cache, tree_oid, b"index.json")
    if oid is None:
        return Index.empty()
    return cache.get("index", oid, lambda: Index.parse(cache.raw_uncached(oid)), len)


class TreeWriter:
    """Builds a new layout tree from an old one, writing only what changed into `batch`."""

    def __init__(self, batch: ObjectBatch, cache: ObjectCache) -> None:
        self._batch = batch
        self._cache = cache

    def layout(
        self,
        base: bytes | None,
        index: Index,
        add: dict[Digest, bytes] | None = None,
        remove: Iterable[Digest] = (),
    ) -> bytes:
        """The id of layout `base` with blobs added/removed and `index` as its index.json."""
        index_oid = self._batch.write(b"blob", index.encode())
        self._cache.put("index", index_oid, index, len(index))  # the next push starts here
        hidden = self._hidden(base, add or {}, set(remove))
        root = self._edit(
            base,
            {
                b"blobs": self._blobs(base, add or {}, set(remove)),
                b"oci-layout": (FILE_MODE, self._batch.write(b"blob", OCI_LAYOUT)),
                b"index.json": (FILE_MODE, index_oid),
                HIDDEN: hidden,
                ATTRIBUTES: self._attributes(hidden),
            },
        )
        assert root is not None  # a layout always has oci-layout and index.json
        return root

    def staging(
        self,
        base: bytes | None,
        add: dict[Digest, bytes] | None = None,
        remove: Iterable[Digest] = (),
    ) -> bytes | None:
        """The id of staging tree `base` with blobs added/removed; None when left empty."""
        add, remove = add or {}, set(remove)
        return self._edit(
            base,
            {b"blobs": self._blobs(base, add, remove), HIDDEN: self._hidden(base, add, remove)},
        )

    def _blobs(
        self, root: bytes | None, add: dict[Digest, bytes], remove: set[Digest]
    ) -> tuple[int, bytes] | None:
        """The new `blobs` entry of tree `root`."""
        found = {d: (FILE_MODE, oid) for d, oid in add.items()}
        return self._by_digest(entry(self._cache, root, b"blobs"), found, remove)

    def _hidden(
        self, root: bytes | None, add: dict[Digest, bytes], remove: set[Digest]
    ) -> tuple[int, bytes] | None:
        """The new `.hroot` entry of tree `root`: the tree of each layer stored as files
        that `add` brings in, none for a blob removed or replaced by a whole one."""
        found: dict[Digest, tuple[int, bytes] | None] = {}
        for digest, oid in add.items():
            # a pointer comes from a pack (storage.filestore), never from this batch
            pointer = None if self._batch.holds(oid) else self._cache.pointer(oid, digest)
            found[digest] = (TREE_MODE, pointer.tree) if pointer is not None else None
        base = entry(self._cache, root, HIDDEN)
        layers = self._by_digest(entry(self._cache, base, LAYERS), found, remove)
        hidden = self._edit(base, {LAYERS: layers}) if found or remove else base
        return (TREE_MODE, hidden) if hidden is not None else None

    def _by_digest(
        self,
        base: bytes | None,
        add: dict[Digest, tuple[int, bytes] | None],
        remove: set[Digest],
    ) -> tuple[int, bytes] | None:
        """Tree `base` of `<alg>/<hex>` entries with `add` set (None: removed) and
        `remove` removed; its new entry."""
        changes: dict[bytes, tuple[int, bytes] | None] = {}
        for alg in {d.algorithm for d in add} | {d.algorithm for d in remove}:
            by_hex: dict[bytes, tuple[int, bytes] | None] = {
                d.hex.encode(): None for d in remove if d.algorithm == alg
            }
            by_hex.update({d.hex.encode(): e for d, e in add.items() if d.algorithm == alg})
            sub = self._edit(entry(self._cache, base, alg.encode()), by_hex)
            changes[alg.encode()] = (TREE_MODE, sub) if sub is not None else None
        edited = self._edit(base, changes) if changes else base
        return (TREE_MODE, edited) if edited is not None else None

    def _attributes(self, hidden: tuple[int, bytes] | None) -> tuple[int, bytes] | None:
        """`.gitattributes` naming each layer stored as files (none if there is none):
        `git archive` runs hroot's smudge filter on them and leaves `.hroot` out."""
        layers = entry(self._cache, hidden[1], LAYERS) if hidden is not None else None
        if layers is None:
            return None
        lines = [ATTRIBUTES_HEAD]
        for alg, (_, by_hex) in sorted(self._cache.tree(layers).items()):
            for name in sorted(name for name, _ in self._cache.tree(by_hex).items()):
                lines.append(b"/blobs/%s/%s filter=hroot\n" % (alg, name))
        return FILE_MODE, self._batch.write(b"blob", b"".join(lines))

    def _edit(
        self, oid: bytes | None, changes: dict[bytes, tuple[int, bytes] | None]
    ) -> bytes | None:
        """Write tree `oid` with `changes`; its id, or None when left empty."""
        base = self._cache.tree(oid) if oid is not None else GitTree([], [], {})
        tree = base.edited(changes)
        if not len(tree):
            return None
        new = self._batch.write(b"tree", tree.encode())
        self._cache.put("tree", new, tree, len(tree))
        return new
