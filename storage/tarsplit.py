"""A tar taken apart into file contents and everything else, and the map that puts it
back together byte for byte (docs/format.md §10).

A `Splitter` walks a tar's 512-byte blocks as they are fed to it, in pieces of any
size, and tells a sink, in order, what is *literal* (headers, PAX and GNU extension
records, GNU sparse maps, padding, the end blocks and whatever follows them) and each
member's content, as its pieces come. Nothing is interpreted beyond what finding the
next header needs, so a tar that parses is rebuilt exactly whatever its dialect: every
byte is either literal or content, in order. A tar that does not parse (a bad header
checksum before the end blocks, a member cut short, an outsized literal run) raises
NotSplittable, and the caller stores it whole.

The map is a list of *records*, each a literal run and then at most one content
(its size and git object id), cut into *chunks* of up to CHUNK_RECORDS records; an
*index* says where in the tar each chunk begins, so a read from any offset parses
one chunk, not the whole map.
"""

from __future__ import annotations

import zlib
from array import array
from bisect import bisect_right
from collections.abc import Generator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
MAX_LITERAL = 16 << 20  # a longer run of non-content bytes: not a tar worth splitting
CHUNK_RECORDS = 512  # records per chunk: what a read at any offset parses at most
CHUNK_LITERAL = 1 << 20  # ... or literal bytes per chunk, whichever comes first
INDEX_MAGIC = b"hroot-tar-index 1\n"
_OID = 20  # bytes of a binary git object id

# Members whose data is file content (regular, contiguous, GNU sparse data); every other
# member's data (PAX `x`/`g`, GNU `L`/`K` long names, unknown types) stays literal.
_CONTENT_TYPES = frozenset(b"0\x007S")
# Members that carry no data whatever their size field says (as Python's tarfile reads them).
_NO_DATA_TYPES = frozenset(b"123456")


class NotSplittable(Exception):
    """This blob is no tar that `Splitter` can take apart: store it whole."""


class Content(Protocol):
    def write(self, piece: bytes | bytearray) -> None:
        """The next bytes of the content (not held on to by the splitter afterwards)."""

    def close(self) -> None:
        """All its bytes came."""


class Sink(Protocol):
    def literal(self, data: bytes) -> None:
        """The next bytes of the tar, stored as they are."""

    def content(self, size: int) -> Content:
        """A member's content of exactly `size` bytes, written to what this returns."""

    def whole(self, data: bytearray) -> None:
        """A member's content, all of it at once (it was fed already)."""


def looks_like_tar(first: bytes | bytearray) -> bool:
    """Whether a blob's first 512 bytes are a tar header (its checksum holds)."""
    return len(first) >= BLOCK and first[:BLOCK] != _ZERO_BLOCK and _checksum_ok(first[:BLOCK])


class Splitter:
    """A tar taken apart as its bytes arrive, as a push brings them: `feed` each piece
    in order, then `end`. Either may raise NotSplittable, after which the splitter is
    of no more use. The walk is a generator (`_walk`) that waits for bytes where it
    needs more, so one sequential reading of the tar serves an upload in progress
    and a blob read from disk alike."""

    def __init__(self, sink: Sink) -> None:
        self.size = 0  # bytes fed
        self._walk = _walk(_Feed(), sink)
        next(self._walk)  # to where it first needs bytes

    def feed(self, piece: bytes | bytearray) -> None:
        if piece:
            self.size += len(piece)
            self._send(piece)

    def end(self) -> None:
        """No more bytes: the walk ends, with the last literal told to the sink."""
        self._send(b"")

    def _send(self, piece: bytes | bytearray) -> None:
        try:
            self._walk.send(piece)
        except StopIteration:  # the end, told by an empty piece (a tar ends only there)
            return
        if not piece:
            raise AssertionError("the tar walk went on after its end")


_Steps = Generator[None, bytes | bytearray, None]


def _walk(feed: _Feed, sink: Sink) -> _Steps:
    """Walk a tar's blocks, telling `sink` each part in order (module docstring)."""
    pending = bytearray()
    pax_size: int | None = None
    while True:
        block = feed.now(BLOCK) if feed.ready(BLOCK) else (yield from feed.block())
        pending += block
        if len(block) < BLOCK:  # the end, or a tail shorter than a block: literal
            break
        if block == _ZERO_BLOCK:  # the end blocks, and whatever follows them
            while piece := (yield from feed.some(MAX_LITERAL)):
                pending += piece
                if len(pending) > MAX_LITERAL:
                    raise NotSplittable(f"over {MAX_LITERAL} bytes after the end of the archive")
            break
        if not _checksum_ok(block):
            raise NotSplittable(f"no tar header at {feed.offset - BLOCK}")
        kind = block[156]
        member = _number(block[124:136])
        if pax_size is not None and kind not in b"xg":
            member, pax_size = pax_size, None
        if kind == ord("S") and block[482]:  # GNU sparse: extension headers follow
            extension = block
            while extension[504]:
                extension = yield from feed.take(BLOCK)
                pending += extension
        if kind in _NO_DATA_TYPES or member == 0:
            continue
        if kind in _CONTENT_TYPES and feed.ready(member):  # most files: here already
            _flush(sink, pending)
            sink.whole(feed.now(member))
        elif kind in _CONTENT_TYPES:
            _flush(sink, pending)
            content = sink.content(member)
            left = member
            while left:
                piece = yield from feed.some(left)
                if not piece:
                    raise NotSplittable(f"the tar ends inside a member, at {feed.offset}")
                content.write(piece)
                left -= len(piece)
            content.close()
        else:
            if member > MAX_LITERAL:  # not read into memory to find out
                raise NotSplittable(f"an extension record of {member} bytes")
            data = yield from feed.take(member)
            if kind == ord("x"):
                pax_size = _pax_size(data, pax_size)
            pending += data
        padding = -member % BLOCK
        pending += feed.now(padding) if feed.ready(padding) else (yield from feed.take(padding))
        if len(pending) > MAX_LITERAL:
            raise NotSplittable("a run of headers longer than a tar needs")
    _flush(sink, pending)


def _flush(sink: Sink, pending: bytearray) -> None:
    if pending:
        sink.literal(bytes(pending))
        pending.clear()


class _Feed:
    """The bytes fed and not yet taken. Each method is a generator that waits (yields)
    for the next piece where it needs more; an empty piece is the end of the tar."""

    def __init__(self) -> None:
        self.offset = 0  # in the tar, of the next byte to be taken
        self._held = bytearray()
        self._at = 0  # in `_held`
        self._ended = False

    def ready(self, n: int) -> bool:
        """Whether `n` bytes are held: `now` takes them without waiting, as for most
        headers and files (a generator for each cost more than parsing them)."""
        return len(self._held) - self._at >= n

    def now(self, n: int) -> bytearray:
        """The next `n` bytes held, or fewer if fewer are."""
        data = self._held[self._at : self._at + n]
        self._at += len(data)
        self.offset += len(data)
        return data

    def take(self, n: int) -> Generator[None, bytes | bytearray, bytearray]:
        """Exactly `n` bytes."""
        data = yield from self.block(n)
        if len(data) < n:
            raise NotSplittable("the tar ends early")
        return data

    def block(self, n: int = BLOCK) -> Generator[None, bytes | bytearray, bytearray]:
        """`n` bytes, or at the end what is left (perhaps none)."""
        while not self.ready(n) and (yield from self._more()):
            pass
        return self.now(n)

    def some(self, n: int) -> Generator[None, bytes | bytearray, bytes | bytearray]:
        """At most `n` bytes, at least one unless the tar ended: a big content's pieces
        pass as they came, without a copy."""
        if self._at == len(self._held):
            if self._ended:
                return b""
            piece = yield
            if not piece:
                self._ended = True
                return b""
            if len(piece) <= n:
                self.offset += len(piece)
                return piece
            self._held, self._at = bytearray(piece), 0
        data = self._held[self._at : self._at + n]
        self._at += len(data)
        self.offset += len(data)
        return data

    def _more(self) -> Generator[None, bytes | bytearray, bool]:
        """Wait for the next piece; False at the end."""
        if self._ended:
            return False
        piece = yield
        if not piece:
            self._ended = True
            return False
        del self._held[: self._at]
        self._at = 0
        self._held += piece
        return True


def _checksum_ok(block: bytes | bytearray) -> bool:
    field = bytes(block[148:156]).strip(b" \x00")
    if not _octal(field):
        return False
    stored = int(field, 8)
    unsigned = _byte_sum(block) - sum(block[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    high = sum(1 for c in bytes(block[:148]) + bytes(block[156:BLOCK]) if c > 127)
    return stored == unsigned - 256 * high  # old tars summed signed bytes


# The sum of a block's bytes in two C calls, not 512 steps of an iterator: 2.4 µs a
# header against 5.8, 0.4 s of the Debian series' push, all of it holding the GIL. A
# number modulo 255 is the sum of its bytes modulo 255 (256 is 1 modulo 255), adler32's
# low half is 1 + the sum modulo 65521, and as 255 * 65521 exceeds what 512 bytes (or
# any fewer than 65,521) can sum to, the two remainders give the sum (the Chinese
# remainder theorem).
_INVERSE = pow(65521 % 255, -1, 255)


def _byte_sum(block: bytes | bytearray) -> int:
    by_255 = int.from_bytes(block, "little") % 255
    by_65521 = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    return by_65521 + 65521 * ((by_255 - by_65521) * _INVERSE % 255)


def _octal(digits: bytes) -> bool:
    """Whether `digits` is one or more octal digits and nothing else."""
    return bool(digits) and not digits.translate(None, b"01234567")


def _number(field: bytes | bytearray) -> int:
    """A numeric header field: octal, or GNU's base-256 for big values."""
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    if field[0] & 0x80:
        raise NotSplittable("a negative size")
    digits = bytes(field).strip(b" \x00")
    if not digits:
        return 0
    if not _octal(digits):
        raise NotSplittable(f"size field {bytes(field)!r}")
    return int(digits, 8)


def _pax_size(data: bytes | bytearray, current: int | None) -> int | None:
    """The `size` a PAX extended header gives the next member, if it gives one."""
    found = current
    for line in bytes(data).split(b"\n"):
        _, _, record = line.partition(b" ")
        key, equals, value = record.partition(b"=")
        if equals and key == b"size":
            if not value.isdigit():
                raise NotSplittable(f"PAX size {value!r}")
            found = int(value)
    return found


# --- the map: records, chunks, index --------------------------------------------------


class Record(NamedTuple):
    """`literal` bytes, then `size` bytes of the git blob `oid` (none when size is 0).
    A tuple: a pull makes one for every file of a layer."""

    literal: bytes
    size: int
    oid: bytes  # binary, 20 bytes; empty when size is 0

    @property
    def length(self) -> int:
        return len(self.literal) + self.size


def encode_records(records: list[Record]) -> bytes:
    out: list[bytes] = []
    for record in records:
        out += (_varint(len(record.literal)), record.literal, _varint(record.size))
        if record.size:
            out.append(record.oid)
    return b"".join(out)


def decode_records(data: bytes) -> list[Record]:
    records: list[Record] = []
    at = 0
    while at < len(data):
        length, at = _read_varint(data, at)
        literal = data[at : at + length]
        at += length
        size, at = _read_varint(data, at)
        oid = data[at : at + _OID] if size else b""
        at += _OID if size else 0
        records.append(Record(literal, size, oid))
    if at != len(data):
        raise ValueError("a chunk of a tar map ends inside a record")
    return records


@dataclass(frozen=True)
class Index:
    """Where each chunk of a tar's map begins in the tar, and its blob."""

    size: int  # of the whole tar
    starts: array[int]
    chunks: list[bytes]  # binary object ids, one per start

    def encode(self) -> bytes:
        out = [INDEX_MAGIC, _varint(self.size), _varint(len(self.chunks))]
        previous = 0
        for start, oid in zip(self.starts, self.chunks, strict=True):
            out += [_varint(start - previous), oid]
            previous = start
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Index:
        if not data.startswith(INDEX_MAGIC):
            raise ValueError("not a tar map index")
        size, at = _read_varint(data, len(INDEX_MAGIC))
        count, at = _read_varint(data, at)
        starts, chunks, start = array("Q"), [], 0
        for _ in range(count):
            step, at = _read_varint(data, at)
            start += step
            starts.append(start)
            chunks.append(data[at : at + _OID])
            at += _OID
        return cls(size, starts, chunks)

    def chunk_at(self, offset: int) -> int:
        """The chunk holding tar byte `offset`."""
        return bisect_right(self.starts, offset) - 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
