"""Uncompressed tar layers stored as files, and rebuilt byte for byte (docs/format.md §10).

A layer that is a tar is taken apart (storage.tarsplit) into one git blob per file
content, which git deduplicates across layers and versions and deltas on `git gc`,
plus a small map of everything else. All of it goes into one pack (storage.packs),
with a tree that holds every object the layer needs and a pointer blob that stands
at the layer's `blobs/` path. The split runs as the upload's bytes arrive
(storage.uploads), or over the blob on disk. Before the pointer is handed back, the
layer is checked: the bytes the map and contents stand for, hashed as they were told
to the pack, must be its digest, and every object written must read back from git to
its id. Only a layer that passes is stored this way, anything else is stored whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
from array import array
from bisect import bisect_right
from collections.abc import Callable
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
_PIECE = 1 << 20  # bytes read at a time from a blob on disk being split


def may_split(size: int | None, first: bytes | bytearray) -> bool:
    """Whether a blob of `size` bytes (None: not known yet) that begins with `first` (512
    bytes at least) is one FileStore takes apart, unless it does not parse to its end."""
    return (size is None or size >= MIN_SIZE) and tarsplit.looks_like_tar(first)


@dataclass
class Stored:
    """A layer stored as files: its pointer's id (hex) and the bytes of pack written."""

    oid: bytes
    written: int


class Splitting:
    """A tar being taken apart into a pack not yet installed, as its bytes come (`feed`,
    then `end`); FileStore.finish installs it. Every byte the map and contents stand for
    is hashed as it is told to the sink, with `algorithm`: the first half of the check
    that the layer is stored right (FileStore.finish does the second)."""

    def __init__(self, store: DiskObjectStore, algorithm: str) -> None:
        self.algorithm = algorithm
        self.pack = PackWriter(store)
        self.hashed = objects.HashedBehind(hashlib.new(algorithm))
        self.index = b""  # the map's index, once `end` wrote it
        self._sink = _Sink(self.pack, self.hashed)
        self._splitter = tarsplit.Splitter(self._sink)

    @property
    def size(self) -> int:
        return self._splitter.size

    def feed(self, piece: bytes | bytearray) -> bool:
        """Take the next bytes; False once the split is given up (then closed): the blob
        is to be stored whole. OSError (the disk, not the tar) is raised, closed too."""
        return self._step(self._splitter.feed, piece)

    def end(self) -> bool:
        """No more bytes: the map's last chunk and its index are written; as `feed`."""
        return self._step(self._end, b"")

    def _end(self, _: bytes) -> None:
        self._splitter.end()
        self.index = self.pack.add(b"blob", self._sink.finish(self.size).encode())

    def _step(self, step: Callable[[bytes | bytearray], None], piece: bytes | bytearray) -> bool:
        try:
            step(piece)
            return True
        except NotSplittable as reason:
            log.info("a tar of %d bytes or more is stored whole: %s", self.size, reason)
        except OSError:  # the disk, not the tar: the caller says so (a full disk)
            self.close()
            raise
        except Exception:  # a tar this code gets wrong must not cost the push
            log.exception(
                "a tar of %d bytes or more is stored whole: splitting it failed", self.size
            )
        except BaseException:
            self.close()
            raise
        self.close()
        return False

    def close(self) -> None:
        """Drop what was written (nothing, once installed)."""
        self.hashed.close()
        self.pack.close()


class FileStore:
    def __init__(self, store: DiskObjectStore, cache: ObjectCache) -> None:
        self._store = store
        self._cache = cache

    def splitting(self, algorithm: str = "sha256") -> Splitting:
        """A split to feed an upload's bytes to as they arrive."""
        return Splitting(self._store, algorithm)

    def store(
        self, read: Callable[[int], bytes | bytearray], size: int, digest: Digest
    ) -> Stored | None:
        """Store the `size` bytes `read` gives as files if they are a tar that is stored
        right as `digest`; None (nothing named, nothing to undo) if they are not."""
        first = bytes(read(tarsplit.BLOCK)) if size >= MIN_SIZE else b""
        if not may_split(size, first):
            return None
        splitting = self.splitting(digest.algorithm)
        try:
            fed = splitting.feed(first)
            while fed and splitting.size < size:
                piece = read(min(_PIECE, size - splitting.size))
                fed = bool(piece) and splitting.feed(piece)
        except BaseException:  # the read failed: drop what was written
            splitting.close()
            raise
        if not fed:
            splitting.close()
            return None
        return self.finish(splitting, digest)

    def finish(self, splitting: Splitting, digest: Digest) -> Stored | None:
        """Install what `splitting` took apart as the layer `digest`, if it is stored right
        (docs/format.md §10): the bytes it was told hash to `digest`, and every object its
        pack wrote reads back from git to its id. None if not: the blob is to be stored
        whole (it may also not be `digest` at all: the caller finds out)."""
        if splitting.size < MIN_SIZE:  # known only now when it came in pieces of no told size
            splitting.close()
            return None
        if not splitting.end():
            return None
        pack = splitting.pack
        try:
            if splitting.algorithm != digest.algorithm or not digest.matches(
                splitting.hashed.hasher()
            ):
                log.info("the tar split as %s hashes otherwise: it is stored whole", digest)
                return None
            tree = _layer_tree(pack, splitting.index)
            pointer = Pointer(
                digest, splitting.size, splitting.index.hex().encode(), tree.hex().encode()
            )
            oid = pack.add(b"blob", pointer.encode()).hex().encode()
            pack.finish()
        finally:
            splitting.close()
        if not self._reads_back(pack):
            log.warning("%s did not read back from its files: it is stored whole", digest)
            return None
        return Stored(oid, pack.size)

    def _reads_back(self, pack: PackWriter) -> bool:
        """Whether every object `pack` wrote reads back from git to its id, as a pull
        reads it: the rest of what the layer needs git had already, named by its id."""
        blobs = objects.PackedFirst(self._store)
        try:
            for oid, kind, size in pack.written():
                hasher = hashlib.sha1(b"%s %d\x00" % (kind, size))
                if kind != b"blob":
                    hasher.update(objects.read_named(self._store, oid)[1])
                elif size <= deflate.STORED_MAX:
                    hasher.update(blobs.read(oid, size))
                else:
                    with blobs.open(oid) as reader:
                        while chunk := reader.read(objects.CHUNK):
                            hasher.update(chunk)
                if hasher.digest() != oid:
                    return False
        finally:
            blobs.close()
        return True

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


def _cost(index: Index) -> int:
    return len(index.chunks) + 1


class _Sink:
    """Writes each content into the pack, cuts the records into chunks, and hashes every
    byte it is told, in order: the bytes the map and contents stand for."""

    def __init__(self, pack: PackWriter, hasher: objects.HashedBehind) -> None:
        self.pack = pack
        self.hasher = hasher
        self._records: list[Record] = []
        self._literal = b""
        self._chunk_literal = 0
        self._offset = 0  # in the tar, where the records not yet in a chunk begin
        self._starts: list[int] = []
        self._chunks: list[bytes] = []

    def literal(self, data: bytes) -> None:
        self.hasher.update(data)
        self._literal += data

    def content(self, size: int) -> _Content:
        return _Content(self, size)

    def whole(self, data: bytearray) -> None:
        self.hasher.update(data)
        self.contained(len(data), self.pack.add_stored(data))

    def contained(self, size: int, oid: bytes) -> None:
        """The content after the literal bytes so far was `size` bytes of blob `oid`."""
        self._add(Record(self._literal, size, oid))

    def finish(self, size: int) -> Index:
        if self._literal or not (self._records or self._chunks):
            self._add(Record(self._literal, 0, b""))
        self._cut()
        index = Index(size, array("Q", self._starts), self._chunks)
        if Index.decode(index.encode()) != index:
            raise AssertionError("the map's index does not decode to itself")
        return index

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
        encoded = tarsplit.encode_records(self._records)
        if tarsplit.decode_records(encoded) != self._records:
            raise AssertionError("a chunk of the map does not decode to its records")
        self._starts.append(self._offset)
        self._chunks.append(self.pack.add(b"blob", encoded))
        self._offset += sum(record.length for record in self._records)
        self._records, self._chunk_literal = [], 0


class _Content:
    """A member's content going into the pack, and into the sink's hash, as it comes."""

    def __init__(self, sink: _Sink, size: int) -> None:
        self._sink = sink
        self._size = size
        self._blob = sink.pack.blob(size)

    def write(self, piece: bytes | bytearray) -> None:
        self._sink.hasher.update(piece)
        self._blob.write(piece)

    def close(self) -> None:
        self._sink.contained(self._size, self._blob.finish())


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
    its record by bisection, so a range costs one chunk's parse, not a rebuild.

    A read fills one buffer: literal bytes are copied in, and a small content (one
    stored block in its pack, as most files are) is read by the kernel straight into
    it, so a pull of a Debian root filesystem of 11,000 files copies each byte once."""

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
        # record `_at`'s content, if small: where it lies in a pack file, or its bytes
        self._small: tuple[int, int] | bytes | None = None
        self._content: objects.ObjectReader | None = None  # on record `_at`'s big content ...
        self._content_at = 0  # ... at this offset into it

    def read(self, n: int = -1) -> bytes | bytearray:
        n = self.size - self._position if n < 0 else min(n, self.size - self._position)
        out = bytearray(n)
        view = memoryview(out)
        filled = 0
        while filled < n:
            if not self._located:
                self._locate()
            record, start = self._records[self._at], self._starts[self._at]
            inside = self._position - start
            literal = record.literal
            if inside < len(literal):
                step = min(len(literal) - inside, n - filled)
                view[filled : filled + step] = literal[inside : inside + step]
                filled += step
                inside += step
            if filled < n and record.size:
                step = self._content_into(record, inside - len(literal), view[filled:n])
                filled += step
                inside += step
            self._position = start + inside
            if inside == len(literal) + record.size:
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

    def _content_into(self, record: Record, offset: int, into: memoryview) -> int:
        """Fill `into` from `record`'s content at `offset`, up to the content's end; how
        many bytes that was."""
        n = min(len(into), record.size - offset)
        if record.size <= deflate.STORED_MAX:  # most files: read in place, or whole
            if self._small is None:
                self._small = self._blobs.stored(record.oid, record.size)
                if self._small is None:  # a delta, after a git gc: read whole
                    self._small = self._blobs.read(record.oid, record.size)
            if isinstance(self._small, bytes):
                into[:n] = self._small[offset : offset + n]
            elif os.preadv(self._small[0], [into[:n]], self._small[1] + offset) != n:
                raise OSError(f"git blob {record.oid.hex()} ends early")
            return n
        if self._content is None or self._content_at != offset:
            self._drop_content()
            self._content = self._blobs.open(record.oid)
            self._content.skip(offset)
            self._content_at = offset
        got = self._content.readinto(into[:n])
        if not got:
            raise OSError(f"git blob {record.oid.hex()} ends early")
        self._content_at += got
        return got

    def _drop_content(self) -> None:
        self._small = None
        if self._content is not None:
            self._content.close()
            self._content = None
