"""Uncompressed tar layers stored as files, and rebuilt byte for byte (docs/format.md §10).

A layer that is a tar is taken apart (storage.tarsplit) into one git blob per file
content, which git deduplicates across layers and versions and deltas on `git gc`,
plus a small map of everything else. All of it goes into one pack (storage.packs),
with a tree that holds every object the layer needs and a pointer blob that stands
at the layer's `blobs/` path. Before the pointer is handed back, the layer is read
back from git as a pull reads it, and hashed: only a layer that rebuilds to its digest
is stored this way, anything else is stored whole.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_right
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from dulwich.object_store import DiskObjectStore

from storage import deflate, objects, tarsplit
from storage.digests import Digest
from storage.layout import FILE_MODE, TREE_MODE, ObjectCache
from storage.packs import PackWriter
from storage.pointers import Pointer
from storage.tarsplit import Index, NotSplittable, Record
from storage.types import BlobReader

log = logging.getLogger("hroot.storage")

MIN_SIZE = 1 << 20  # smaller tars are stored whole: a pack each is not worth it
_VERIFY_PIECE = 4 << 20


def may_split(size: int, first: bytes | bytearray) -> bool:
    """Whether a blob of `size` bytes that begins with `first` (512 bytes at least) is
    one `FileStore.store` takes apart, unless it does not parse to its end."""
    return size >= MIN_SIZE and tarsplit.looks_like_tar(first)


@dataclass
class Split:
    """A tar taken apart: every object but the pointer, in a pack not yet installed."""

    pack: PackWriter
    size: int
    index: bytes  # binary ids
    tree: bytes


@dataclass
class Stored:
    """A layer stored as files: its pointer's id (hex) and the bytes of pack written."""

    oid: bytes
    written: int


class FileStore:
    def __init__(self, store: DiskObjectStore, cache: ObjectCache) -> None:
        self._store = store
        self._cache = cache

    def store(self, read: tarsplit.Read, size: int, digest: Digest) -> Stored | None:
        """Store the `size` bytes `read` gives as files if they are a tar that rebuilds to
        `digest`; None (nothing named, nothing to undo) if they are not."""
        split = self._split(read, size)
        return self._install(split, digest) if split is not None else None

    def _split(self, read: tarsplit.Read, size: int) -> Split | None:
        """Take the tar apart into a pack not yet installed; None if it is no tar to
        split (nothing written then)."""
        first = bytes(read(tarsplit.BLOCK)) if size >= MIN_SIZE else b""
        if not may_split(size, first):
            return None
        pack = PackWriter(self._store)
        try:
            sink = _Sink(pack)
            tarsplit.split(_Prefixed(first, read), size, sink)
            index = pack.add(b"blob", sink.finish(size).encode())
            return Split(pack, size, index, _layer_tree(pack, index))
        except NotSplittable as reason:
            log.info("a tar of %d bytes is stored whole: %s", size, reason)
            pack.close()
            return None
        except OSError:  # the disk, not the tar: the caller says so (a full disk)
            pack.close()
            raise
        except Exception:  # a tar this code gets wrong must not cost the push
            log.exception("a tar of %d bytes is stored whole: splitting it failed", size)
            pack.close()
            return None
        except BaseException:
            pack.close()
            raise

    def _install(self, split: Split, digest: Digest) -> Stored | None:
        """Add `split`'s pointer, install its pack, and check that the layer reads back as
        `digest`; None if it does not."""
        with split.pack as pack:
            pointer = Pointer(
                digest, split.size, split.index.hex().encode(), split.tree.hex().encode()
            )
            oid = pack.add(b"blob", pointer.encode()).hex().encode()
            pack.finish()
        if not self._rebuilds(pointer, digest):
            log.warning("%s did not rebuild from its files: it is stored whole", digest)
            return None
        return Stored(oid, pack.size)

    def open(self, oid: bytes, digest: Digest) -> BlobReader:
        """Blob `oid`, stored at `digest`'s path, streamed: rebuilt if it is a pointer."""
        pointer = self._cache.pointer(oid, digest)
        if pointer is None:
            return objects.open_blob(self._store, oid.decode())
        return self.rebuild(pointer)

    def rebuild(self, pointer: Pointer) -> Rebuilt:
        """The layer `pointer` stands for, streamed."""
        index = self._cache.get(
            "tar-index", pointer.index, lambda: Index.decode(self._cache.raw(pointer.index)), _cost
        )
        return Rebuilt(self._store, self._cache, index)

    def size(self, oid: bytes, digest: Digest) -> int:
        """The size of blob `oid` at `digest`'s path: a pointer's says its layer's."""
        pointer = self._cache.pointer(oid, digest)
        if pointer is not None:
            return pointer.size
        with objects.open_blob(self._store, oid.decode()) as reader:
            return reader.size

    def _rebuilds(self, pointer: Pointer, digest: Digest) -> bool:
        """Whether the layer `pointer` stands for reads back from git as `digest`'s bytes:
        each piece is hashed in another thread while the next is read (hashlib lets go
        of the GIL), which costs less than reading the upload again to compare."""
        hasher = digest.hasher()
        hashing: Future[None] | None = None
        with self.rebuild(pointer) as reader:
            while chunk := reader.read(_VERIFY_PIECE):
                if hashing is not None:
                    hashing.result()
                hashing = objects.HASHING.submit(hasher.update, chunk)
        if hashing is not None:
            hashing.result()
        return digest.matches(hasher)


def _cost(index: Index) -> int:
    return len(index.chunks) + 1


class _Prefixed:
    """`read`, with the bytes already taken from it given back first."""

    def __init__(self, first: bytes, read: Callable[[int], bytes | bytearray]) -> None:
        self._first = first
        self._read = read

    def __call__(self, n: int) -> bytes | bytearray:
        if not self._first:
            return self._read(n)
        head, self._first = self._first[:n], self._first[n:]
        return head + self._read(n - len(head)) if n > len(head) else head


class _Sink:
    """Writes each content into the pack and cuts the records into chunks."""

    def __init__(self, pack: PackWriter) -> None:
        self._pack = pack
        self._records: list[Record] = []
        self._literal = b""
        self._chunk_literal = 0
        self._offset = 0  # in the tar, where the records not yet in a chunk begin
        self._starts: list[int] = []
        self._chunks: list[bytes] = []

    def literal(self, data: bytes) -> None:
        self._literal += data

    def content(self, size: int, read: tarsplit.Read) -> None:
        oid = self._pack.add_blob(size, read)
        self._add(Record(self._literal, size, oid))

    def finish(self, size: int) -> Index:
        if self._literal or not (self._records or self._chunks):
            self._add(Record(self._literal, 0, b""))
        self._cut()
        return Index(size, array("Q", self._starts), self._chunks)

    def _add(self, record: Record) -> None:
        self._literal = b""
        self._records.append(record)
        self._chunk_literal += len(record.literal)
        if (
            len(self._records) >= tarsplit.CHUNK_RECORDS
            or self._chunk_literal >= tarsplit.CHUNK_LITERAL
        ):
            self._cut()

    def _cut(self) -> None:
        if not self._records:
            return
        self._starts.append(self._offset)
        self._chunks.append(self._pack.add(b"blob", tarsplit.encode_records(self._records)))
        self._offset += sum(record.length for record in self._records)
        self._records, self._chunk_literal = [], 0


def _layer_tree(pack: PackWriter, index: bytes) -> bytes:
    """Write the tree of a layer: `index`, and every other object the pack has taken
    (contents and chunks of the map, written or found stored) under `<xx>/<rest of its
    hex id>`, as git's own objects folder spreads them; its id."""
    fanout: list[list[bytes]] = [[] for _ in range(256)]
    for oid in pack.taken():
        if oid != index:
            fanout[oid[0]].append(oid)
    entries = []
    for first, oids in enumerate(fanout):  # two hex digits sort before "index"
        if not oids:
            continue
        oids.sort()
        sub = b"".join(b"%o %s\x00%s" % (FILE_MODE, oid[1:].hex().encode(), oid) for oid in oids)
        oids.clear()
        entries.append(b"%o %02x\x00" % (TREE_MODE, first) + pack.add(b"tree", sub))
    entries.append(b"%o index\x00" % FILE_MODE + index)
    return pack.add(b"tree", b"".join(entries))


class Rebuilt(BlobReader):
    """A layer stored as files, read as the tar it was: literal bytes from the map's
    records, contents from their blobs. A read goes on from record to record; a skip
    only moves the position, and the next read finds its chunk through the index and
    its record by bisection, so a range costs one chunk's parse, not a rebuild."""

    def __init__(self, store: DiskObjectStore, cache: ObjectCache, index: Index) -> None:
        self.size = index.size
        self._cache = cache
        self._index = index
        self._blobs = objects.PackedFirst(store)
        self._position = 0
        self._located = False  # whether record `_at` holds the position
        self._chunk = -1  # which chunk `_records` holds
        self._records: list[Record] = []
        self._starts: list[int] = []  # of each record, in the tar
        self._at = 0
        self._small: bytes | None = None  # record `_at`'s content, if small and read
        self._content: BlobReader | None = None  # open on record `_at`'s content ...
        self._content_at = 0  # ... at this offset into it

    def read(self, n: int = -1) -> bytes | bytearray:
        n = self.size - self._position if n < 0 else min(n, self.size - self._position)
        out = bytearray()
        while len(out) < n:
            if not self._located:
                self._locate()
            record, start = self._records[self._at], self._starts[self._at]
            inside = self._position - start
            literal = len(record.literal)
            if inside < literal:
                piece = record.literal[inside : inside + n - len(out)]
            else:
                piece = self._read_content(record, inside - literal, n - len(out))
            out += piece
            self._position += len(piece)
            if self._position == start + literal + record.size:
                self._next()
        return out

    def skip(self, n: int) -> None:
        if n:
            self._position = min(self.size, self._position + n)
            self._located = False

    def close(self) -> None:
        self._drop_content()
        self._blobs.close()

    def _locate(self) -> None:
        """Find the record holding the position: in the chunk held, or in its own."""
        chunk = self._index.chunk_at(self._position)
        if chunk != self._chunk:
            self._load(chunk)
        at = bisect_right(self._starts, self._position) - 1
        if at != self._at:
            self._drop_content()
            self._at = at
        self._located = True

    def _next(self) -> None:
        """Go on to the next record, in the next chunk after the last."""
        self._drop_content()
        self._at += 1
        if self._at == len(self._records) and self._position < self.size:
            self._load(self._chunk + 1)
            self._at = 0

    def _load(self, chunk: int) -> None:
        self._drop_content()
        oid = self._index.chunks[chunk].hex().encode()
        self._records = tarsplit.decode_records(self._cache.raw_uncached(oid))
        self._chunk, self._at = chunk, -1
        self._starts, start = [], self._index.starts[chunk]
        for record in self._records:
            self._starts.append(start)
            start += len(record.literal) + record.size

    def _read_content(self, record: Record, offset: int, n: int) -> bytes | bytearray:
        if record.size <= deflate.STORED_MAX:  # most files: read whole, in one go
            if self._small is None:
                self._small = self._blobs.read(record.oid, record.size)
            return self._small[offset : offset + n]
        if self._content is None or self._content_at != offset:
            self._drop_content()
            self._content = self._blobs.open(record.oid)
            self._content.skip(offset)
            self._content_at = offset
        data = self._content.read(min(n, record.size - offset))
        if not data:
            raise OSError(f"git blob {record.oid.hex()} ends early")
        self._content_at += len(data)
        return data

    def _drop_content(self) -> None:
        self._small = None
        if self._content is not None:
            self._content.close()
            self._content = None
