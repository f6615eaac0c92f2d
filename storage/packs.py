"""Many git objects written as one pack, made durable with one fsync (gitformat-pack).

A layer stored as files (storage.filestore), or the files of an image's filesystem view
(storage.fastimport), are thousands of objects; loose, each would cost a file and a
sync. Here they stream into one pack file, compressed with ISA-L (level 1: a standard
zlib stream, 7 times faster than zlib's level 1 on this machine) where they compress
well (trees, a tar's map, the view's files) or stored as they are (level 0: a layer's
file contents, read back at the speed of a copy), and the pack's index is written
beside it by hand, so no `git index-pack` reads it all again. The
pack's count is only known at its end: it is patched into the header, and the
trailing checksum is then computed by reading the file once more from the page cache.
Objects the repository has already (objects.freshen) or this pack has are not written
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from isal import isal_zlib

from storage import deflate, objects

_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}
_WHOLE = 8 << 20  # objects up to this size are hashed before they are written
_IDX_MAGIC = b"\xfftOc\x00\x00\x00\x02"
# per object written: its id, offset and crc32 (an index entry), its type and size
_RECORD = struct.Struct(">20sQIBQ")


class PackWriter:
    """A pack being written into `objects/pack`; `finish` installs it, `close` drops it."""

    def __init__(self, store: DiskObjectStore) -> None:
        self._store = store
        self._dir = Path(store.path) / "pack"
        self._dir.mkdir(exist_ok=True)
        self._tmp = self._dir / f"tmp_pack_{secrets.token_hex(8)}"
        self._file = open(self._tmp, "w+b")  # noqa: SIM115 (closed by close())
        self._file.write(b"PACK" + struct.pack(">II", 2, 0))
        self._writeback = objects.Writeback(self._file)
        self._records = bytearray()  # _RECORD per object written
        self._seen: set[bytes] = set()  # binary ids written here or found stored
        self._packed = objects.PackedFirst(store)
        self._freshened: set[str] = set()  # packs made recent
        self.size = 0  # bytes of the pack so far

    def add(self, kind: bytes, data: bytes | bytearray) -> bytes:
        """Write a small object (a tree, a map), compressed, unless it is stored already;
        its binary id."""
        oid = _git_id(kind, data)
        if not self._known(oid):
            packed = _entry_header(_TYPES[kind], len(data)) + isal_zlib.compress(data, 1)
            self._put([packed], oid, _TYPES[kind], len(data))
        return oid

    def add_blob(
        self, size: int, read: Callable[[int], bytes | bytearray], compress: bool = False
    ) -> bytes:
        """Write a file's content of `size` bytes from `read` (exactly the bytes asked
        for), as `blob` does; its binary id. If `read` raises, the pack is as it was."""
        writer = self.blob(size, compress)
        try:
            left = size
            while left:
                chunk = read(min(objects.CHUNK, left))
                writer.write(chunk)
                left -= len(chunk)
        except BaseException:
            writer.drop()
            raise
        return writer.finish()

    def blob(self, size: int, compress: bool = False) -> BlobWriter:
        """A file's content of `size` bytes, written as its pieces come: unless it is
        stored already, as stored blocks (level 0, as hroot stores layers: read back at
        the speed of a copy), or with `compress` as `add` compresses. One at a time."""
        return BlobWriter(self, size, compress)

    def add_stored(self, data: bytes | bytearray) -> bytes:
        """Write a file's content held whole as stored blocks, as `blob` does, unless it
        is stored already; its binary id."""
        oid = _git_id(b"blob", data)
        if not self._known(oid):
            header = _entry_header(_TYPES[b"blob"], len(data))
            parts = [header, *_stored(data, True, isal_zlib.adler32(data), True)]
            self._put(parts, oid, _TYPES[b"blob"], len(data))
        return oid

    def _put(self, parts: list[bytes | memoryview], oid: bytes, kind: int, size: int) -> None:
        start = self._file.tell()
        self._record(oid, start, self._write(parts), kind, size)

    def _write(self, parts: list[bytes | memoryview], crc: int = 0) -> int:
        """Append `parts` to the pack; the crc32 `crc` carried on over them."""
        for part in parts:
            crc = isal_zlib.crc32(part, crc)
        self._file.writelines(parts)
        self._writeback.wrote()
        return crc

    def _record(self, oid: bytes, start: int, crc: int, kind: int, size: int) -> None:
        """Object `oid` was written at `start`: one entry of the index to be."""
        self._records += _RECORD.pack(oid, start, crc, kind, size)

    def taken(self) -> Iterator[bytes]:
        """Every object id this pack was given so far, written or found stored."""
        return iter(self._seen)

    def written(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Each object this pack wrote (not those found stored): id, type, size."""
        names = {number: name for name, number in _TYPES.items()}
        for oid, _, _, kind, size in _RECORD.iter_unpack(self._records):
            yield oid, names[kind], size

    def _known(self, oid: bytes) -> bool:
        """Whether the object is written here or stored (then made recent, as
        objects.freshen does, each pack once): in the packs first, listed once per writer
        (objects.PackedFirst), then among the loose objects."""
        if oid in self._seen:
            return True
        self._seen.add(oid)
        hexsha = oid.hex()
        found = self._packed.find(oid)
        if found is not None:
            path = found[0]
            if path not in self._freshened:
                try:
                    os.utime(path)
                except FileNotFoundError:  # repacked meanwhile: look as git does
                    return objects.freshen(self._store, hexsha.encode())
                self._freshened.add(path)
            return True
        try:
            os.utime(os.path.join(self._store.path, hexsha[:2], hexsha[2:]))
        except FileNotFoundError:
            return False
        return True

    def finish(self) -> None:
        """Patch the count in, write the checksum and the index, sync both, and name
        them `pack-<checksum>` (the .idx last: git and dulwich look for it)."""
        count = len(self._records) // _RECORD.size
        if not count:
            return
        self._file.seek(8)
        self._file.write(struct.pack(">I", count))
        self._file.flush()
        self._file.seek(0)
        checksum = hashlib.sha1()
        while chunk := self._file.read(objects.CHUNK):
            checksum.update(chunk)
        pack_sum = checksum.digest()
        self._file.write(pack_sum)
        self._file.flush()
        os.fsync(self._file.fileno())
        idx_tmp = self._tmp.with_suffix(".idx")
        with open(idx_tmp, "xb") as idx:
            idx.write(_index(self._records, pack_sum))
            idx.flush()
            os.fsync(idx.fileno())
        name = self._dir / f"pack-{pack_sum.hex()}"
        os.rename(self._tmp, name.with_suffix(".pack"))
        os.rename(idx_tmp, name.with_suffix(".idx"))
        objects.fsync_dir(self._dir)
        self.size = os.path.getsize(name.with_suffix(".pack"))

    def close(self) -> None:
        """Drop what was not installed."""
        self._file.close()
        self._packed.close()
        for path in (self._tmp, self._tmp.with_suffix(".idx")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobWriter:
    """A blob of a known size going into a pack as its pieces come (PackWriter.blob).

    Up to _WHOLE bytes it is held, and hashed once whole: one git has already is then
    never written. A bigger one is written as it comes, hashed on the way, and cut back
    out of the pack if git turns out to have it, or if it is dropped.
    """

    def __init__(self, pack: PackWriter, size: int, compress: bool) -> None:
        self._pack = pack
        self._size = size
        self._left = size
        self._compress = compress
        self._held: list[bytes | bytearray] | None = [] if size <= _WHOLE else None
        if self._held is None:
            self._start = pack._file.tell()
            self._git_id = hashlib.sha1(b"blob %d\x00" % size)
            self._deflater = isal_zlib.compressobj(1) if compress else None
            self._adler = 1
            self._crc = pack._write([_entry_header(_TYPES[b"blob"], size)])

    def write(self, piece: bytes | bytearray) -> None:
        if not piece:  # a stream's first piece writes the zlib header: it must have bytes
            return
        if len(piece) > self._left:
            raise ValueError(f"more than the {self._size} bytes of a blob")
        first = self._left == self._size
        self._left -= len(piece)
        if self._held is not None:
            self._held.append(piece)
            return
        self._git_id.update(piece)
        parts: list[bytes | memoryview]
        if self._deflater is not None:
            parts = [self._deflater.compress(piece)]
            if not self._left:
                parts.append(self._deflater.flush())
        else:
            self._adler = isal_zlib.adler32(piece, self._adler)
            parts = _stored(piece, first, self._adler, not self._left)
        self._crc = self._pack._write(parts, self._crc)

    def finish(self) -> bytes:
        """The blob's binary id, once all its bytes came."""
        if self._left:
            raise ValueError(f"a blob of {self._size} bytes ended {self._left} bytes short")
        if self._held is not None:
            held, self._held = self._held, []
            data = held[0] if len(held) == 1 else b"".join(held)
            return self._pack.add(b"blob", data) if self._compress else self._pack.add_stored(data)
        oid = self._git_id.digest()
        if self._pack._known(oid):
            self.drop()
        else:
            self._pack._record(oid, self._start, self._crc, _TYPES[b"blob"], self._size)
        return oid

    def drop(self) -> None:
        """Leave the pack as it was before this blob."""
        if self._held is not None:
            self._held = []
            return
        file = self._pack._file
        if file.tell() != self._start:
            file.truncate(self._start)
            file.seek(self._start)


def _git_id(kind: bytes, data: bytes | bytearray) -> bytes:
    hasher = hashlib.sha1(b"%s %d\x00" % (kind, len(data)))
    hasher.update(data)
    return hasher.digest()


def _stored(
    data: bytes | bytearray, first: bool, adler: int, last: bool
) -> list[bytes | memoryview]:
    """A piece of a blob's zlib stream at level 0: if `first` the zlib header, `data` as
    stored blocks, and if `last` the end of the stream with its checksum `adler` (of all
    the blob's bytes)."""
    parts: list[bytes | memoryview] = [deflate.ZLIB_HEADER] if first else []
    parts += deflate.stored_blocks(data)
    if last:
        parts.append(deflate.FINAL_BLOCK + adler.to_bytes(4, "big"))
    return parts


def _entry_header(kind: int, size: int) -> bytes:
    out = bytearray([(kind << 4) | (size & 15)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _index(records: bytearray, pack_sum: bytes) -> bytes:
    """A version 2 pack index of the objects in `records`, sorted one fan-out bucket
    at a time (a million objects must not become a million tuples at once)."""
    buckets: list[bytearray] = [bytearray() for _ in range(256)]
    for at in range(0, len(records), _RECORD.size):
        buckets[records[at]] += records[at : at + _RECORD.size]
    fanout, names, crcs, offsets, large = [], bytearray(), bytearray(), bytearray(), bytearray()
    total = 0
    for bucket in buckets:
        entries = sorted(_RECORD.iter_unpack(bucket))
        bucket.clear()
        total += len(entries)
        fanout.append(total)
        for oid, offset, crc, _, _ in entries:
            names += oid
            crcs += struct.pack(">I", crc)
            if offset < 0x80000000:
                offsets += struct.pack(">I", offset)
            else:
                offsets += struct.pack(">I", 0x80000000 | len(large) // 8)
                large += struct.pack(">Q", offset)
    body = b"".join(
        [_IDX_MAGIC, struct.pack(">256I", *fanout), names, crcs, offsets, large, pack_sum]
    )
    return body + hashlib.sha1(body).digest()
