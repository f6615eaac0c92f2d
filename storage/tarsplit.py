"""A tar taken apart into file contents and everything else, and the map that puts it
back together byte for byte (docs/format.md §10).

`split` walks a tar's 512-byte blocks as they stream past and tells a sink, in order,
what is *literal* (headers, PAX and GNU extension records, GNU sparse maps, padding,
the end blocks and whatever follows them) and where a member's content begins and how
long it is. Nothing is interpreted beyond what finding the next header needs, so a
tar that parses is rebuilt exactly whatever its dialect: every byte is either literal
or content, in order. A tar that does not parse (a bad header checksum before the end
blocks, a member cut short, an outsized literal run) raises NotSplittable, and the
caller stores it whole.

The map is a list of *records*, each a literal run and then at most one content
(its size and git object id), cut into *chunks* of up to CHUNK_RECORDS records; an
*index* says where in the tar each chunk begins, so a read from any offset parses
one chunk, not the whole map.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
MAX_LITERAL = 16 << 20  # a longer run of non-content bytes: not a tar worth splitting
READ_PIECE = 1 << 20  # bytes read at a time from the blob being split (_Exact)
CHUNK_RECORDS = 512  # records per chunk: what a read at any offset parses at most
CHUNK_LITERAL = 1 << 20  # ... or literal bytes per chunk, whichever comes first
INDEX_MAGIC = b"hroot-tar-index 1\n"
_OID = 20  # bytes of a binary git object id

# Members whose data is file content (regular, contiguous, GNU sparse data); every other
# member's data (PAX `x`/`g`, GNU `L`/`K` long names, unknown types) stays literal.
_CONTENT_TYPES = frozenset(b"0\x007S")
# Members that carry no data whatever their size field says (as Python's tarfile reads them).
_NO_DATA_TYPES = frozenset(b"123456")

Read = Callable[[int], bytes | bytearray]


class NotSplittable(Exception):
    """This blob is no tar that `split` can take apart: store it whole."""


class Sink(Protocol):
    def literal(self, data: bytes) -> None:
        """The next bytes of the tar, stored as they are."""

    def content(self, size: int, read: Read) -> None:
        """A member's content: exactly `size` bytes, which the sink reads with `read`."""


def looks_like_tar(first: bytes) -> bool:
    """Whether a blob's first 512 bytes are a tar header (its checksum holds)."""
    return len(first) >= BLOCK and first[:BLOCK] != _ZERO_BLOCK and _checksum_ok(first[:BLOCK])


def split(read: Read, size: int, sink: Sink) -> None:
    """Walk the `size` bytes of a tar from `read`, telling `sink` each part in order."""
    reader = _Exact(read, size)
    pending = bytearray()
    pax_size: int | None = None
    while reader.left:
        if reader.left < BLOCK:  # a tail shorter than a block: literal
            pending += reader.take(reader.left)
            break
        block = reader.take(BLOCK)
        pending += block
        if block == _ZERO_BLOCK:  # the end blocks, and whatever follows them
            if reader.left > MAX_LITERAL:
                raise NotSplittable(f"{reader.left} bytes after the end of the archive")
            pending += reader.take(reader.left)
            break
        if not _checksum_ok(block):
            raise NotSplittable(f"no tar header at {reader.offset - BLOCK}")
        kind = block[156]
        member = _number(block[124:136])
        if pax_size is not None and kind not in b"xg":
            member, pax_size = pax_size, None
        if kind == ord("S") and block[482]:  # GNU sparse: extension headers follow
            extension = block
            while extension[504]:
                extension = reader.take(BLOCK)
                pending += extension
        padding = -member % BLOCK
        if kind in _NO_DATA_TYPES or member == 0:
            continue
        if member + padding > reader.left:
            raise NotSplittable(f"a member at {reader.offset - BLOCK} runs past the end")
        if kind in _CONTENT_TYPES:
            _flush(sink, pending)
            sink.content(member, reader.take)
        else:
            if member > MAX_LITERAL:  # not read into memory to find out
                raise NotSplittable(f"an extension record of {member} bytes")
            data = reader.take(member)
            if kind == ord("x"):
                pax_size = _pax_size(data, pax_size)
            pending += data
        pending += reader.take(padding)
        if len(pending) > MAX_LITERAL:
            raise NotSplittable("a run of headers longer than a tar needs")
    _flush(sink, pending)


def _flush(sink: Sink, pending: bytearray) -> None:
    if pending:
        sink.literal(bytes(pending))
        pending.clear()


class _Exact:
    """Reads of exactly the bytes asked for, out of a blob of known size, served from a
    piece of READ_PIECE bytes read at a time: a tar is mostly headers of 512 bytes and
    small files, and a call of `read` for each cost more than parsing them."""

    def __init__(self, read: Read, size: int) -> None:
        self._read = read
        self.offset = 0
        self.left = size
        self._piece: bytes | bytearray = b""
        self._at = 0  # in `_piece`

    def take(self, n: int) -> bytes | bytearray:
        if n > self.left:
            raise NotSplittable("the tar ends early")
        at, piece = self._at, self._piece
        if at + n <= len(piece):
            data = piece[at : at + n]
            self._at = at + n
        else:
            held = piece[at:]
            unread = self.left - len(held)  # in the blob, not yet read from it
            need = n - len(held)
            if need >= READ_PIECE:
                data = held + self._exactly(need)
                self._piece, self._at = b"", 0
            else:
                self._piece = self._exactly(min(READ_PIECE, unread))
                data = held + self._piece[:need]
                self._at = need
        self.offset += n
        self.left -= n
        return data

    def _exactly(self, n: int) -> bytes | bytearray:
        data = self._read(n)
        if len(data) != n:
            raise NotSplittable("the blob ends early")
        return data


def _checksum_ok(block: bytes | bytearray) -> bool:
    field = bytes(block[148:156]).strip(b" \x00")
    if not _octal(field):
        return False
    stored = int(field, 8)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:BLOCK])
    if stored == unsigned:
        return True
    high = sum(1 for c in bytes(block[:148]) + bytes(block[156:BLOCK]) if c > 127)
    return stored == unsigned - 256 * high  # old tars summed signed bytes


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


@dataclass(frozen=True)
class Record:
    """`literal` bytes, then `size` bytes of the git blob `oid` (none when size is 0)."""

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
