"""Reading image layers as streams of tar entries, for the filesystem view (storage.fsview).

A layer is a tar, plain, gzip (several members allowed) or zstd (several frames allowed),
told apart by its first bytes. It is read in one pass, in pieces of objects.CHUNK: memory
holds one tar header and one piece of content at a time, however big the layer or its
files. Every entry is checked before anything is done with it; what a hostile or broken
tar could make of a view (a path out of the root, a file too big, a stream that ends
early) raises Refused with one line of reason.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard
from isal import isal_zlib

from storage.errors import StoreError
from storage.objects import CHUNK

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"  # in directory D: D's entries of lower layers are hidden
# PAX records that tarfile turns into a TarInfo field of their own: said by the entry already
_PAX_AS_FIELDS = frozenset(
    ("path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "GNU.sparse.name")
)
_GZIP_ANY_HEADER = 47  # zlib wbits: a gzip or zlib header, the largest window


class Refused(StoreError):
    """A layer the view will not show: the message says why, in one line."""

    message = "refused"


class Readable(Protocol):
    def read(self, n: int) -> bytes | bytearray: ...


class _Gunzip:
    """A gzip stream of one or more members, inflated as it is read."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._inflate = isal_zlib.decompressobj(wbits=_GZIP_ANY_HEADER)
        self._ended = False

    def read(self, n: int) -> bytes:
        while not self._ended:
            pending = self._inflate.unconsumed_tail or self._inflate.unused_data
            if self._inflate.eof:  # a member ended: another may follow
                if not pending and not (pending := bytes(self._source.read(CHUNK))):
                    self._ended = True
                    break
                self._inflate = isal_zlib.decompressobj(wbits=_GZIP_ANY_HEADER)
            elif not pending and not (pending := bytes(self._source.read(CHUNK))):
                raise Refused(message="the gzip stream ends early")
            try:
                data = self._inflate.decompress(pending, n)
            except (zlib.error, isal_zlib.error) as error:
                raise Refused(message=f"corrupt gzip: {error}") from None
            if data:
                return data
        return b""


class _Unzstd:
    """A zstd stream of one or more frames, decompressed as it is read."""

    def __init__(self, source: Readable) -> None:
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_across_frames=True, closefd=False
        )

    def read(self, n: int) -> bytes:
        try:
            return self._reader.read(n)
        except zstandard.ZstdError as error:
            raise Refused(message=f"corrupt zstd: {error}") from None


class _Prefixed:
    """`first` (bytes already read to tell the compression), then the rest of `source`."""

    def __init__(self, first: bytes, source: Readable) -> None:
        self._first = first
        self._source = source

    def read(self, n: int) -> bytes:
        if self._first:
            data, self._first = self._first[:n], self._first[n:]
            return data
        return bytes(self._source.read(n))


def compressed(magic: bytes) -> bool:
    """Whether a blob beginning with these 4 bytes is gzip or zstd."""
    return magic.startswith(GZIP_MAGIC) or magic == ZSTD_MAGIC


def decompressed(source: Readable) -> Readable:
    """The tar inside a layer blob: gunzipped, unzstd'ed, or as it is."""
    magic = bytes(source.read(4))
    prefixed = _Prefixed(magic, source)
    if magic.startswith(GZIP_MAGIC):
        return _Gunzip(prefixed)
    if magic == ZSTD_MAGIC:
        return _Unzstd(prefixed)
    return prefixed


@dataclass(frozen=True)
class Limits:
    """How much of an image the view takes on; beyond, it is refused (docs/format.md §9)."""

    entries: int = 500_000  # tar entries of all layers together, whiteouts included
    total_bytes: int = 8 << 30  # bytes of regular files of all layers together
    file_bytes: int = 2 << 30  # bytes of one file


LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar entry, checked: `path` relative to the root, no `.` or `..` in it."""

    path: tuple[str, ...]  # components; () is the root itself
    kind: str  # dir, file, symlink, hardlink, char, block, fifo
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: int
    size: int  # of a regular file's content, else 0
    link: str  # a symlink's target as written; a hard link's target path, checked
    device: tuple[int, int]  # major, minor of a char or block device
    pax: tuple[tuple[str, str], ...]  # PAX records the fields above do not hold (xattrs)


_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def split_path(name: str, what: str = "path") -> tuple[str, ...]:
    """A tar member name as components relative to the root (`./a//b/` -> (a, b));
    Refused for an absolute name or one with `..`, which would leave the root."""
    if name.startswith("/"):
        raise Refused(message=f"absolute {what} {name!r}")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise Refused(message=f"{what} {name!r} leaves the root with '..'")
    return parts


def entries(stream: Readable, limits: Limits) -> Iterator[tuple[Entry, Readable | None]]:
    """Each entry of a tar stream, with a reader of a regular file's content (to be read
    before the next entry is asked for, or skipped); Refused for what `limits` or the
    checks of split_path do not allow, and for a tar that is not one or ends early."""
    try:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tar:  # type: ignore[call-overload]
            for member in tar:
                tar.members.clear()  # stream mode keeps every header otherwise
                entry = _entry(member, limits)
                content = tar.extractfile(member) if entry.kind == "file" else None
                yield entry, _Content(content) if content is not None else None
    except tarfile.TarError as error:
        raise Refused(message=f"not a readable tar: {error}") from None
    except (EOFError, OSError) as error:
        raise Refused(message=f"the layer ends early or is damaged: {error}") from None


class _Content:
    """A file's content in the tar, read by the caller: a tar that ends inside it is
    Refused as one that ends between entries is (tarfile raises ReadError)."""

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader

    def read(self, n: int) -> bytes | bytearray:
        try:
            return self._reader.read(n)
        except tarfile.TarError as error:
            raise Refused(message=f"the layer ends early or is damaged: {error}") from None


def _entry(member: tarfile.TarInfo, limits: Limits) -> Entry:
    kind = _KINDS.get(member.type)
    if kind is None:
        raise Refused(message=f"entry {member.name!r} is of a type a filesystem has not")
    if kind == "file" and member.size > limits.file_bytes:
        raise Refused(
            message=f"file {member.name!r} has {member.size} bytes, over {limits.file_bytes}"
        )
    link = member.linkname
    if kind == "hardlink":
        link = "/".join(split_path(link, "hard link target"))
        if not link:
            raise Refused(message=f"hard link {member.name!r} to the root")
    pax = tuple(sorted((k, v) for k, v in member.pax_headers.items() if k not in _PAX_AS_FIELDS))
    return Entry(
        path=split_path(member.name),
        kind=kind,
        mode=member.mode & 0o7777,
        uid=member.uid,
        gid=member.gid,
        uname=member.uname,
        gname=member.gname,
        mtime=int(member.mtime),
        size=member.size if kind == "file" else 0,
        link=link,
        device=(member.devmajor, member.devminor) if kind in ("char", "block") else (0, 0),
        pax=pax,
    )
