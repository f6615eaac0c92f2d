"""Streaming reads and writes of git blob objects: the narrow fast path dulwich lacks.

dulwich's object APIs hold a whole object in memory (a 1 GiB blob costs 2-3 GiB of RSS
to write or read, and it refuses loose objects over 512 MiB). These functions write
and read blobs of any size in constant memory, in git's own formats: a loose object
(zlib of `blob <size>\\0<bytes>`) or an entry of a pack after `git gc`. Layers are
already gzip or zstd, so blobs are stored at zlib level 0: any higher level caps the
writer at 45-60 MB/s and saves nothing.

An upload is spooled straight into a loose object's layout (`SPOOL_PREFIX` bytes
left free for the header, then stored blocks), so finishing it renames it into
place instead of copying every byte again, after one read for the git id unless
that was hashed as the bytes came in. Small objects (trees, commits, index.json,
manifests) are written in an ObjectBatch, synced together before a ref names them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.object_store import DiskObjectStore
from dulwich.pack import PackFileDisappeared
from isal import isal_zlib

from storage import deflate, packindex
from storage.digests import Digest, Hasher
from storage.errors import DigestInvalid, SizeInvalid
from storage.types import BlobReader

CHUNK = 1 << 20
PARALLEL_HASH_SIZE = 16 << 20  # from this size on, a blob's git id is hashed in a thread
BEHIND_BATCH = 1 << 20  # bytes a HashedBehind hands its thread at a time
_BLOB_TYPE = 3  # pack object type numbers (gitformat-pack)
_DELTA_TYPES = (6, 7)
_ENTRY_HEADER_MAX = 16  # bytes that hold any pack entry's type and size (a varint)


WRITEBACK_EVERY = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing dirty pages back, do not wait


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the final fsync does all the work
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return call  # type: ignore[no-any-return]


_sync_file_range = _find_sync_file_range()


class Writeback:
    """Has the kernel start writing a growing file's new bytes to disk every
    WRITEBACK_EVERY of them, without waiting, so that the fsync making the file
    durable at its end has little left to do.

    With 24 GiB of memory a 1 GiB upload stays dirty in the page cache until that
    fsync, which then took 0.5 s; started as the bytes arrive, it takes 0.02 s and
    the whole write is a third shorter. This is sync_file_range(SYNC_FILE_RANGE_WRITE),
    which git's core.fsyncMethod=batch uses too and which Python's os lacks; being
    only a hint, its errors are ignored.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._start = file.tell()

    def wrote(self) -> None:
        end = self._file.tell()
        if end - self._start >= WRITEBACK_EVERY and _sync_file_range is not None:
            self._file.flush()
            _sync_file_range(
                self._file.fileno(), self._start, end - self._start, _SYNC_FILE_RANGE_WRITE
            )
            self._start = end


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Threads that hash big blobs' git ids (BlobHashes): one per core, started as needed.
HASHING = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="hroot-hash")


class BlobHashes:
    """What a blob of `size` bytes must be hashed for, in one pass: its git id, the
    adler32 of its zlib stream and, to check a claimed `digest`, its OCI digest.

    For a big blob the git id (sha1) is computed in a second thread, beside the
    rest (hashlib releases the GIL), one chunk behind: a thread of HASHING, the one
    pool of the process for it. A small one is hashed inline:
    a thread per blob cost more than it saved, in thread starts and GIL handoffs,
    when eight clients pushed 1 MiB layers at once.
    """

    def __init__(self, size: int, digest: Digest | None = None) -> None:
        self.size = size
        self.header = b"blob %d\x00" % size
        self._digest = digest
        self._oci = digest.hasher() if digest is not None else None
        self._git_id = hashlib.sha1(self.header)
        self._adler = zlib.adler32(self.header)
        self._pending: Future[None] | None = None
        self.hashed = 0  # bytes fed so far

    def update(self, chunk: bytes) -> None:
        self.hashed += len(chunk)
        if self.size < PARALLEL_HASH_SIZE:
            self._git_id.update(chunk)
        else:
            if self._pending is not None:
                self._pending.result()
            self._pending = HASHING.submit(self._git_id.update, chunk)
        if self._oci is not None:
            self._oci.update(chunk)
        self._adler = zlib.adler32(chunk, self._adler)

    def finish(self) -> tuple[str, bytes]:
        """(git id, zlib trailer); DigestInvalid if the bytes are not the claimed digest."""
        self.close()
        if self._digest is not None and not self._digest.matches(self._oci):  # type: ignore[arg-type]
            raise DigestInvalid(str(self._digest))
        return self._git_id.hexdigest(), self._adler.to_bytes(4, "big")

    def close(self) -> None:
        """Let the hashing in flight end."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def __enter__(self) -> BlobHashes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HashedBehind:
    """A hasher fed from one thread and updated in a thread of HASHING, one batch of
    at least BEHIND_BATCH bytes behind, in order: a tar split as its upload arrives
    hashes all of its bytes, and did so beside its work, not in its way. The pieces
    given must not change afterwards (they are kept, not copied, until hashed)."""

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._batch: list[bytes | bytearray] = []
        self._batched = 0
        self._pending: Future[None] | None = None

    def update(self, piece: bytes | bytearray) -> None:
        self._batch.append(piece)
        self._batched += len(piece)
        if self._batched >= BEHIND_BATCH:
            self._submit()

    def hasher(self) -> Hasher:
        """The hasher, once every piece given is in it."""
        self._submit()
        self.close()
        return self._hasher

    def close(self) -> None:
        """Let the hashing in flight end."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _submit(self) -> None:
        self.close()
        batch, self._batch, self._batched = self._batch, [], 0
        if batch:
            self._pending = HASHING.submit(_update_all, self._hasher, batch)


def _update_all(hasher: Hasher, pieces: list[bytes | bytearray]) -> None:
    for piece in pieces:
        hasher.update(piece)


def write_blob(
    objects_dir: Path,
    read: Callable[[int], bytes],
    size: int,
    digest: Digest | None = None,
) -> str:
    """Write exactly `size` bytes from `read` as a loose blob; return its git object id.

    One pass computes the git id and the OCI digest and writes the object. A
    `digest` that does not match, or fewer or more bytes than `size`, raise and
    leave nothing behind. The object is synced before it gets its final name, so
    a ref moved after this never points at a missing object. The zlib stream is
    written by hand as stored (level 0) blocks (storage.deflate).
    """
    tmp = objects_dir / f"tmp_obj_{secrets.token_hex(8)}"
    try:
        with open(tmp, "xb") as out, BlobHashes(size, digest) as hashes:
            header = hashes.header
            out.write(deflate.ZLIB_HEADER + deflate.stored_block_header(len(header)) + header)
            writeback = Writeback(out)
            remaining = size
            while remaining:
                chunk = read(min(CHUNK, remaining))
                if not chunk:
                    raise SizeInvalid(f"got {size - remaining} of {size} bytes")
                if len(chunk) > remaining:
                    raise SizeInvalid(f"more than {size} bytes")
                remaining -= len(chunk)
                hashes.update(chunk)
                out.writelines(deflate.stored_blocks(chunk))
                writeback.wrote()
            if read(1):
                raise SizeInvalid(f"more than {size} bytes")
            oid, trailer = hashes.finish()
            out.write(deflate.FINAL_BLOCK + trailer)
            out.flush()
            os.fsync(out.fileno())
        return _install(objects_dir, tmp, oid)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


SPOOL_PREFIX = 64  # room for the zlib header and `blob <size>\0` of any size


def new_spool(path: Path) -> None:
    with open(path, "xb") as spool:
        spool.write(bytes(SPOOL_PREFIX))


def append_spool(spool: BinaryIO, data: bytes) -> None:
    spool.writelines(deflate.stored_blocks(data))


def install_spool(objects_dir: Path, spool: BinaryIO, path: Path, hashes: BlobHashes) -> str:
    """Make the spool at `path` (open as `spool`) a loose blob of `hashes.size` bytes;
    its git id. DigestInvalid if `hashes` has a digest to check and it does not match.

    Unless `hashes` was fed the bytes as they came in, one read feeds it; then the
    header goes in front and the end of the stream behind.
    """
    with hashes:
        if not hashes.hashed:
            spool.seek(SPOOL_PREFIX)
            blocks = deflate.StoredBlocks(spool)
            remaining = hashes.size
            while remaining:
                chunk = blocks.read(min(CHUNK, remaining))
                remaining -= len(chunk)
                hashes.update(chunk)
            spool.truncate()
        elif hashes.hashed == hashes.size:
            spool.seek(0, os.SEEK_END)
        else:
            raise ValueError(f"hashed {hashes.hashed} bytes of a blob of {hashes.size}")
        oid, trailer = hashes.finish()
    spool.write(deflate.FINAL_BLOCK + trailer)
    spool.seek(0)
    spool.write(deflate.zlib_prefix(hashes.header, SPOOL_PREFIX))
    spool.flush()
    os.fsync(spool.fileno())
    return _install(objects_dir, path, oid)


def freshen(store: DiskObjectStore, oid: bytes) -> bool:
    """Whether git has the object (without reading it: dulwich's `in` inflates it whole),
    made recent if so, as git does for an object it would write again: its loose file's
    or its pack's mtime is now. An object that no ref reached may be about to be named
    again; a gc counts its expiry from that mtime, so it keeps the object."""
    hexsha = oid.decode()
    with contextlib.suppress(FileNotFoundError):  # not loose, or pruned this moment
        os.utime(os.path.join(store.path, hexsha[:2], hexsha[2:]))
        return True
    for pack in store.packs:
        try:
            pack.index.object_offset(oid)  # a binary search; `in` would walk the whole index
        except KeyError:
            continue
        except (FileNotFoundError, PackFileDisappeared):  # repacked meanwhile: look again
            return freshen(store, oid)
        # repacked meanwhile: it is elsewhere (dulwich opens the pack file only now, and
        # says PackFileDisappeared when git removed it after its index was read)
        with contextlib.suppress(FileNotFoundError, PackFileDisappeared):
            os.utime(pack.data.path)
            return True
        return freshen(store, oid)
    return False


class ObjectBatch:
    """The small objects of one ref update (trees, commit, index.json, a manifest),
    written loose and made durable together, before the ref moves onto them.

    Each object is synced before it gets its final name (a named object with unsynced
    bytes could survive a crash, and a later write of it would be skipped), and its
    folder after. One object at a time, each sync is a journal commit of its own;
    writing them all, then syncing them, then naming them lets the filesystem commit
    them together, as git's `core.fsyncMethod=batch` does: a push's six objects took
    12 ms instead of 24 on this machine's ext4.

    Index.json and the blobs tree are rewritten whole by every push (3.4 MB at 10,000
    tags), so they are compressed with ISA-L, whose level 1 is a standard zlib stream
    made 5x faster than zlib's level 1, and smaller (dulwich also feeds zlib a tree
    entry by entry). Leaving the `with` block discards whatever was not installed.
    """

    def __init__(self, store: DiskObjectStore) -> None:
        self._store = store
        self._objects_dir = Path(store.path)
        self._pending: dict[str, Path] = {}  # id -> its temporary file, written, not synced
        self.size = 0  # bytes of the objects written, for storage.maintenance

    def write(self, kind: bytes, data: bytes) -> bytes:
        """Write an object (not yet durable nor readable); its id."""
        header = b"%s %d\x00" % (kind, len(data))
        git_id = hashlib.sha1(header)
        git_id.update(data)
        oid = git_id.hexdigest()
        if oid in self._pending or freshen(self._store, oid.encode()):
            return oid.encode()
        tmp = self._objects_dir / f"tmp_obj_{secrets.token_hex(8)}"
        self._pending[oid] = tmp
        self.size += len(data)
        with open(tmp, "xb") as out:
            compressor = isal_zlib.compressobj(1)
            out.write(compressor.compress(header))
            out.write(compressor.compress(data))
            out.write(compressor.flush())
        return oid.encode()

    def holds(self, oid: bytes) -> bool:
        """Whether this batch wrote `oid` (not readable until installed)."""
        return oid.decode() in self._pending

    def install(self) -> None:
        """Sync every object written, name it, then sync the folders of the names."""
        for tmp in self._pending.values():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        folders = {_name(self._objects_dir, tmp, oid) for oid, tmp in self._pending.items()}
        self._pending.clear()
        for folder in folders:
            fsync_dir(folder)

    def __enter__(self) -> ObjectBatch:
        return self

    def __exit__(self, *_: object) -> None:
        for tmp in self._pending.values():  # written, never installed
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending.clear()


def _install(objects_dir: Path, tmp: Path, oid: str) -> str:
    """Give a synced temporary object its final name, durably."""
    fsync_dir(_name(objects_dir, tmp, oid))
    return oid


def _name(objects_dir: Path, tmp: Path, oid: str) -> Path:
    """Rename a synced temporary object to its final name, or drop it if an identical
    copy is there already (two writers of one object is harmless), made recent; its folder."""
    folder = objects_dir / oid[:2]
    final = folder / oid[2:]
    with contextlib.suppress(FileNotFoundError):  # gone (pruned) meanwhile: ours goes in
        os.utime(final)  # made recent, as `freshen` does
        tmp.unlink()
        return folder
    os.chmod(tmp, 0o444)
    for attempt in range(3):
        with contextlib.suppress(FileExistsError):  # there, or gone again: the rename tells
            os.mkdir(folder)
        try:
            os.rename(tmp, final)
            break
        except FileNotFoundError:
            # `git prune-packed` removes a fan-out folder it emptied, maybe between our
            # mkdir and rename: make it again (as git itself does)
            if attempt == 2 or not tmp.exists():
                raise
    return folder


class _Inflated:
    """Any zlib stream, through zlib."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._decompressor = zlib.decompressobj()

    def read(self, n: int) -> bytes:
        parts = []
        while n:
            d = self._decompressor
            source = d.unconsumed_tail or self._file.read(CHUNK)
            if not source:
                raise OSError("git object ends early")
            data = d.decompress(source, min(n, CHUNK))
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def readinto(self, view: memoryview) -> None:
        view[:] = self.read(len(view))

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.read(min(n, CHUNK)))


class ObjectReader(BlobReader):
    """The bytes of one blob object, streamed from a loose object or a pack entry.

    `start` is where the zlib stream begins in `file`; a loose object's stream
    begins with its `blob <size>\\0` header, which `header` says to drop.
    """

    def __init__(self, file: BinaryIO, start: int, size: int, header: int = 0) -> None:
        self.size = size
        self._file = file
        self._start = start
        self._consumed = 0  # bytes of the inflated stream consumed, header included
        file.seek(start + len(deflate.ZLIB_HEADER))
        self._stream: deflate.StoredBlocks | _Inflated = deflate.StoredBlocks(file)
        self._end = header + size
        self._through(lambda stream: stream.skip(header))
        self._consumed = header

    def read(self, n: int = -1) -> bytes | bytearray:
        n = self._end - self._consumed if n < 0 else min(n, self._end - self._consumed)
        data = self._through(lambda stream: stream.read(n))
        self._consumed += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill `view` as far as the blob goes, with no buffer between (Rebuilt's reads of
        a layer's big files); how many bytes that was."""
        n = min(len(view), self._end - self._consumed)
        self._through(lambda stream: stream.readinto(view[:n]))
        self._consumed += n
        return n

    def skip(self, n: int) -> None:
        """Move `n` bytes forward without reading them (seeking where blocks are stored)."""
        n = min(n, self._end - self._consumed)
        self._through(lambda stream: stream.skip(n))
        self._consumed += n

    def _through(self, step: Callable[[deflate.StoredBlocks | _Inflated], Any]) -> Any:
        try:
            return step(self._stream)
        except deflate.NotStored:
            # A compressed block: start again with zlib, and come back to where we were.
            self._file.seek(self._start)
            self._stream = _Inflated(self._file)
            self._stream.skip(self._consumed)
            return step(self._stream)

    def close(self) -> None:
        self._file.close()


_MOVED_PAUSES = (0, 0.01, 0.05, 0.1, 0.25, 0.5)  # seconds before each look (open_blob)


def guard_pack_cache(store: DiskObjectStore) -> None:
    """Let one thread at a time change dulwich's cache of packs.

    dulwich adds the packs it finds in `objects/pack` to that cache, pops the ones that
    are gone, and evicts one whose file disappeared, all with no lock: when `git repack`
    removes a pack (or renames its `.tmp-*` pack into place), two threads that both saw
    it go both pop it, and the second raises KeyError (a 500, found by running gc
    beside pulls).
    """
    lock = threading.RLock()  # an update enforces the memory limit, which evicts

    def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any) -> Any:
            with lock:
                return method(*args)

        return held

    for name in ("_update_pack_cache", "_evict_pack", "_enforce_packed_git_limit"):
        setattr(store, name, guarded(getattr(store, name)))


def read_named(store: DiskObjectStore, oid: bytes) -> tuple[int, bytes]:
    """Type and content of `oid`, an object a ref or a tree names, so it exists: as with
    open_blob, a `git gc` may be moving it into a pack dulwich cannot read yet, so look
    again, with pauses, before taking it for missing (a pull beside gc with retention
    and `git gc` met a tip commit missing once in 7,900 reads without this)."""
    for pause in _MOVED_PAUSES:
        if pause:  # even sleep(0) gives up the GIL: a page reading 2,000 tips lost 0.1 s
            time.sleep(pause)
        try:
            return store.get_raw(oid)
        except KeyError:
            continue
    raise KeyError(oid)


def open_blob(store: DiskObjectStore, oid: str) -> ObjectReader:
    """Open blob `oid` wherever git keeps it: loose, a pack entry, or (small) a delta.

    A `git gc` or `git repack` may move the object between lookup and open, and while
    it renames a new pack's files into place the object can be in no pack dulwich can
    read yet: look again, with pauses, for up to a second (found by running gc beside
    pulls, about once in 8,000 reads without the pauses).
    """
    for pause in _MOVED_PAUSES:
        if pause:
            time.sleep(pause)
        try:
            return _open_loose(store, oid)
        except FileNotFoundError:
            pass
        for pack in store.packs:
            try:
                offset = pack.index.object_offset(oid.encode())
                return _open_packed(store, pack.data.path, offset, oid)
            except KeyError:
                continue
            except (FileNotFoundError, PackFileDisappeared):
                break  # the packs changed under us (git gc): look again
    raise KeyError(oid)


class PackedFirst:
    """Reads many blobs one after another, as a layer stored as files does (one per
    file of the tar): the packs are listed once, and looked in before the loose
    objects, where such blobs are, each pack file opened once. Whatever it cannot
    find there (moved by a gc meanwhile, or loose) it looks up as open_blob does.
    storage.packs finds what is stored already through it too."""

    def __init__(self, store: DiskObjectStore) -> None:
        self._store = store
        self._packs = packindex.listed(store.pack_dir)
        self._last = 0  # where `find` looks first
        self._fds: dict[str, int] = {}  # pack path -> open file

    def find(self, oid: bytes) -> tuple[str, int] | None:
        """The pack and offset of `oid` (binary), if a pack listed holds it: first the
        pack that held the last one found (a layer's files were mostly written together)."""
        if not self._packs:
            return None
        for at in (self._last, *range(len(self._packs))):
            path, index = self._packs[at]
            offset = index.offset(oid)
            if offset is not None:
                self._last = at
                return path, offset
        return None

    def open(self, oid: bytes) -> ObjectReader:
        """Blob `oid` (binary), streamed."""
        found = self.find(oid)
        if found is not None:
            with contextlib.suppress(FileNotFoundError):
                return _open_packed(self._store, found[0], found[1], oid.hex())
        return open_blob(self._store, oid.hex())

    def read(self, oid: bytes, size: int) -> bytes:
        """The whole of a blob of `size` bytes, in one read where it is one stored block
        (`stored`), else streamed."""
        found = self.stored(oid, size) if size <= deflate.STORED_MAX else None
        if found is not None:
            fd, offset = found
            data = os.pread(fd, size, offset)
            if len(data) == size:
                return data
        with self.open(oid) as reader:
            return bytes(reader.read(size))

    def stored(self, oid: bytes, size: int) -> tuple[int, int] | None:
        """Where the bytes of blob `oid` (binary), of `size` bytes, lie in a pack file (an
        open file and an offset) when its pack entry is one stored block, as storage.packs
        writes file contents and git's repack keeps them unless it makes a delta; None
        otherwise. A layer's file is then read straight into the buffer of a pull."""
        found = self.find(oid)
        if found is None:
            return None
        path, offset = found
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = self._fds[path] = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
        head = os.pread(fd, _ENTRY_HEADER_MAX + 7, offset)
        kind, length, at = _entry_header(head)
        block = head[at + 2 : at + 7]  # after the zlib header
        if kind != _BLOB_TYPE or length != size or len(block) < 5 or block[0] & 0x06:
            return None  # not a blob of this size, or not a stored block first
        stored = int.from_bytes(block[1:3], "little")
        if stored != size or stored ^ 0xFFFF != int.from_bytes(block[3:5], "little"):
            return None
        return fd, offset + at + 7

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for _, index in self._packs:
            index.close()
        self._packs = []


def _open_loose(store: DiskObjectStore, oid: str) -> ObjectReader:
    file = open(os.path.join(store.path, oid[:2], oid[2:]), "rb")  # noqa: SIM115 (reader owns it)
    try:
        # git's own zlib (core.looseCompression) may spend a hundred bytes or more on a
        # dynamic Huffman table before the header's first byte: inflate until its NUL.
        inflate, head = zlib.decompressobj(), b""
        while b"\x00" not in head and len(head) < 64 and (chunk := file.read(512)):
            head += inflate.decompress(chunk, 64 - len(head))
        header, _, _ = head.partition(b"\x00")
        kind, _, size = header.partition(b" ")
        if kind != b"blob" or not size.isdigit():
            raise KeyError(oid)
        file.seek(0)
        return ObjectReader(file, 0, int(size), header=len(header) + 1)
    except BaseException:
        file.close()
        raise


def _entry_header(head: bytes) -> tuple[int, int, int]:
    """A pack entry's type, size and header length, from its first bytes (at least
    _ENTRY_HEADER_MAX of them, or all there are)."""
    byte, at = head[0], 1
    kind, size, shift = (byte >> 4) & 7, byte & 15, 4
    while byte & 0x80:
        byte, at = head[at], at + 1
        size |= (byte & 0x7F) << shift
        shift += 7
    return kind, size, at


def _open_packed(store: DiskObjectStore, pack_path: str, offset: int, oid: str) -> ObjectReader:
    file = open(pack_path, "rb")  # noqa: SIM115 (the reader owns it)
    file.seek(offset)
    kind, size, at = _entry_header(file.read(_ENTRY_HEADER_MAX))
    if kind == _BLOB_TYPE:
        return ObjectReader(file, offset + at, size)
    file.close()
    if kind not in _DELTA_TYPES:
        raise KeyError(oid)
    # A delta: only small objects are deltified (core.bigFileThreshold), so let
    # dulwich resolve it in memory.
    _, data = store.get_raw(oid.encode())
    return ObjectReader(io.BytesIO(zlib.compress(data, 0)), 0, len(data))
