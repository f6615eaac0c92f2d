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
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from isal import isal_zlib

from storage import deflate, objects

_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}
_WHOLE = 8 << 20  # objects up to this size are hashed before they are written
_IDX_MAGIC = b"\xfftOc\x00\x00\x00\x02"
_RECORD = struct.Struct(">20sQI")  # object id, offset, crc32: one index entry


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
            self._put([packed], oid)
        return oid

    def add_blob(
        self, size: int, read: Callable[[int], bytes | bytearray], compress: bool = False
    ) -> bytes:
        """Write a file's content of `size` bytes from `read` (exactly the bytes asked
        for), unless it is stored already; its binary id. As stored blocks (level 0, as
        hroot stores layers: read back at the speed of a copy), or with `compress` as
        `add` compresses. A big one is written a piece at a time: if `read` raises, the
        pack is as it was."""
        if size <= _WHOLE:
            data = read(size)
            if compress:
                return self.add(b"blob", data)
            oid = _git_id(b"blob", data)
            if not self._known(oid):
                header = _entry_header(_TYPES[b"blob"], size)
                self._put([header, *_stored(data, True, zlib.adler32(data), True)], oid)
            return oid
        start = self._file.tell()
        try:
            oid, crc = self._stream(size, read, compress)
        except BaseException:
            self._file.truncate(start)
            self._file.seek(start)
            raise
        if self._known(oid):
            self._file.truncate(start)
            self._file.seek(start)
        else:
            self._records += _RECORD.pack(oid, start, crc)
        return oid

    def _stream(
        self, size: int, read: Callable[[int], bytes | bytearray], compress: bool
    ) -> tuple[bytes, int]:
        """Write a blob's entry piece by piece; its binary id and the entry's crc32."""
        git_id = hashlib.sha1(b"blob %d\x00" % size)
        deflater = isal_zlib.compressobj(1) if compress else None
        header = _entry_header(_TYPES[b"blob"], size)
        crc = zlib.crc32(header)
        self._file.write(header)
        adler, left = 1, size
        while left:
            chunk = read(min(objects.CHUNK, left))
            git_id.update(chunk)
            left -= len(chunk)
            parts: list[bytes | memoryview]
            if deflater is not None:
                parts = [deflater.compress(chunk)]
                if not left:
                    parts.append(deflater.flush())
            else:
                adler = zlib.adler32(chunk, adler)
                parts = _stored(chunk, left + len(chunk) == size, adler, not left)
            for part in parts:
                crc = zlib.crc32(part, crc)
            self._file.writelines(parts)
            self._writeback.wrote()
        return git_id.digest(), crc

    def _put(self, parts: list[bytes | memoryview], oid: bytes) -> None:
        start = self._file.tell()
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        self._file.writelines(parts)
        self._records += _RECORD.pack(oid, start, crc)
        self._writeback.wrote()

    def taken(self) -> Iterator[bytes]:
        """Every object id this pack was given so far, written or found stored."""
        return iter(self._seen)

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
        for oid, offset, crc in entries:
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
