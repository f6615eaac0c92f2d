"""Lookups in a pack's index (gitformat-pack, version 2), many of them, quickly.

A layer stored as files looks up every file content it writes (is it stored already?)
and reads (where is it?): ten thousand lookups for a Debian root filesystem, in each
pack. dulwich's bisection calls back into Python at every step, some 40 µs a lookup;
here the fan-out table narrows the range and a scan (small buckets) or a loop over the
memory-mapped table of ids (big ones) finishes it, a few µs.
"""

from __future__ import annotations

import mmap
import os
import struct

_MAGIC = b"\xfftOc\x00\x00\x00\x02"
_FANOUT = struct.Struct(">256I")
_HEADER = len(_MAGIC) + _FANOUT.size
_SCAN = 512  # ids in a fan-out bucket up to which it is scanned rather than bisected


class PackIndex:
    """A version 2 `.idx` file, mapped; the mapping outlives the file being replaced."""

    def __init__(self, data: mmap.mmap) -> None:
        self._data = data
        self._fanout = _FANOUT.unpack_from(data, len(_MAGIC))
        self._count = self._fanout[255]

    @classmethod
    def open(cls, path: str) -> PackIndex | None:
        """The index at `path`; None if it is gone or not of version 2."""
        try:
            with open(path, "rb") as file:
                data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):  # gone, or empty
            return None
        if data[: len(_MAGIC)] != _MAGIC:
            data.close()
            return None
        return cls(data)

    def offset(self, oid: bytes) -> int | None:
        """Where object `oid` (20 bytes) begins in the pack; None if it is not there."""
        data = self._data
        lo = self._fanout[oid[0] - 1] if oid[0] else 0
        hi = self._fanout[oid[0]]
        if hi - lo <= _SCAN:  # one C call over the bucket's ids beats a Python bisection
            start, end = _HEADER + 20 * lo, _HEADER + 20 * hi
            while (at := data.find(oid, start, end)) >= 0:
                if (at - _HEADER) % 20 == 0:
                    return self._offset_of((at - _HEADER) // 20)
                start = at + 1  # straddling two ids: look on
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            at = _HEADER + 20 * mid
            found = data[at : at + 20]
            if found == oid:
                return self._offset_of(mid)
            if found < oid:
                lo = mid + 1
            else:
                hi = mid
        return None

    def _offset_of(self, position: int) -> int:
        table = _HEADER + 24 * self._count  # after the ids and their crc32s
        (offset,) = struct.unpack_from(">I", self._data, table + 4 * position)
        if offset & 0x80000000:
            large = table + 4 * self._count + 8 * (offset & 0x7FFFFFFF)
            (offset,) = struct.unpack_from(">Q", self._data, large)
        return int(offset)

    def close(self) -> None:
        self._data.close()


def listed(pack_dir: str) -> list[tuple[str, PackIndex]]:
    """Each pack of `pack_dir` whose index is there (git writes it last) and readable
    here: (its .pack path, its index), newest first, where a push's objects most
    likely are."""
    try:
        names = os.listdir(pack_dir)
    except FileNotFoundError:
        return []
    found: list[tuple[float, str, PackIndex]] = []
    for name in names:
        if not name.endswith(".pack") or name[:-5] + ".idx" not in names:
            continue
        path = os.path.join(pack_dir, name)
        index = PackIndex.open(path[:-5] + ".idx")
        if index is None:
            continue
        try:
            found.append((os.path.getmtime(path), path, index))
        except FileNotFoundError:
            index.close()
    found.sort(key=lambda item: item[0], reverse=True)
    return [(path, index) for _, path, index in found]
