"""Which loose refs of one folder changed since last asked, told by the kernel (inotify).

The lineage index (storage.lineage) must honour refs moved by hand (docs/format.md §7) on
every push. Comparing the stat of 2,000 ref files costs about 9 ms, more than the push
itself; inotify names exactly the refs that were written or removed (git, dulwich and
another hroot all write `NAME.lock` and rename it over `NAME`), for one read() per push.

Where the kernel cannot say (no inotify: not Linux, or out of instances; its queue
overflowed; packed-refs was rewritten; the folder was made anew) `changed()` answers
None, "anything may have changed", and the caller compares every ref.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import struct
import sys
from pathlib import Path

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_IN_CLOSE_WRITE = 0x8  # a ref written in place
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80  # NAME.lock renamed over NAME: how git writes a ref
_IN_DELETE = 0x200
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000  # the watch is gone: its folder was removed
_IN_ISDIR = 0x40000000
_IN_ONLYDIR = 0x1000000
_WRITES = _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_DELETE
_PACKED_REFS = b"packed-refs"


class RefWatch:
    """Watches `<gitdir>/<folder>` (its loose refs) and `<gitdir>/packed-refs`.

    Not thread-safe: its one caller (storage.lineage) holds a lock around it.
    """

    def __init__(self, gitdir: Path, folder: str) -> None:
        self._gitdir = gitdir
        self._folder = gitdir / folder
        self._events = _inotify()  # None: no inotify here
        self._gitdir_watch = self._watch(gitdir)
        self._folder_watch: int | None = None
        self._known = False  # nothing is known before the first full comparison

    def changed(self) -> set[bytes] | None:
        """File names of the refs in the folder written or removed since the last call;
        None when that cannot be told (the first call among others): compare them all."""
        if self._events is None or self._gitdir_watch is None:
            return None
        names: set[bytes] = set()
        known = self._known
        while (data := self._events.read(1 << 16)) is not None:
            known = self._read(data, names) and known
        if self._folder_watch is None:
            self._folder_watch = self._watch(self._folder)
            if self._folder_watch is not None:  # the folder is new since we last looked
                known = False
        self._known = True
        return names if known else None

    def close(self) -> None:
        if self._events is not None:
            self._events.close()

    def _read(self, data: bytes, names: set[bytes]) -> bool:
        """Adds the ref names `data`'s events are about; False if they say "anything"."""
        known, offset = True, 0
        while offset < len(data):
            watch, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if watch == self._folder_watch and mask & (_IN_IGNORED | _IN_MOVE_SELF):
                self._forget_folder()
                known = False
            elif mask & _IN_Q_OVERFLOW or (watch == self._gitdir_watch and name == _PACKED_REFS):
                known = False
            elif watch == self._folder_watch and _is_ref(name, mask):
                names.add(name)
        return known

    def _forget_folder(self) -> None:
        """The folder was removed (`git pack-refs --prune` of its last ref) or moved away."""
        assert self._events is not None and self._folder_watch is not None
        _LIBC.inotify_rm_watch(self._events.fileno(), self._folder_watch)  # if still there
        self._folder_watch = None

    def _watch(self, folder: Path) -> int | None:
        if self._events is None:
            return None
        watch = _LIBC.inotify_add_watch(
            self._events.fileno(), os.fsencode(folder), _WRITES | _IN_MOVE_SELF | _IN_ONLYDIR
        )
        return watch if watch >= 0 else None


def _is_ref(name: bytes, mask: int) -> bool:
    """A ref's file, not a lock file being written nor a folder."""
    return bool(name) and not name.endswith(b".lock") and not mask & _IN_ISDIR


def _load_libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc if hasattr(libc, "inotify_init1") else None


_LIBC = _load_libc()


def _inotify() -> io.FileIO | None:
    """A non-blocking inotify instance as a file (closed with it, or when collected)."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:  # EMFILE: the user's inotify instances are all taken
        return None
    return io.FileIO(fd, "rb")
