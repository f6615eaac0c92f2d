"""Compare-and-swap of refs under git's own lock files (docs/format.md §5)."""

from __future__ import annotations

import os
import random
import threading
import time

from dulwich.file import FileLocked
from dulwich.objects import ZERO_SHA
from dulwich.refs import DiskRefsContainer

from storage.errors import RefBusy

# A ref update holds its lock for milliseconds, `git pack-refs` packed-refs.lock for
# well under a second (git itself gives up on it after 1 s): a lock older than this
# was left by a crash. Store.gc removes such locks (storage.gc).
STALE_LOCK_SECONDS = 10.0
# A lock goes within milliseconds, or is a crash's and is broken once stale: waiting
# longer than that would only hold a thread.
LOCK_WAIT_SECONDS = STALE_LOCK_SECONDS + 5


def guard_packed_refs(refs: DiskRefsContainer) -> None:
    """Let one thread at a time load or drop dulwich's cache of packed-refs.

    dulwich fills that cache in place and empties it, with no lock, when it finds the
    file replaced (`git gc` packs refs) or has removed a packed ref (a staging ref
    emptied): a thread filling it meanwhile raises TypeError, or another reads a
    half-filled dict in which an existing branch is missing.
    """
    lock = threading.RLock()  # loading drops a stale cache first
    load, drop = refs.get_packed_refs, refs._invalidate_packed_refs_cache

    def get_packed_refs() -> dict[bytes, bytes]:
        with lock:
            return load()

    def invalidate_packed_refs_cache() -> None:
        with lock:
            drop()

    refs.get_packed_refs = get_packed_refs  # type: ignore[method-assign]
    refs._invalidate_packed_refs_cache = invalidate_packed_refs_cache  # type: ignore[method-assign]


def read(refs: DiskRefsContainer, name: bytes) -> bytes | None:
    try:
        return refs[name]
    except KeyError:
        return None


def compare_and_swap(
    refs: DiskRefsContainer, name: bytes, old: bytes | None, new: bytes | None
) -> bool:
    """Move `name` from `old` (None: absent) to `new` (None: delete); False if it moved meanwhile.

    Waits for a lock another writer holds, breaks a lock left by a crash, and
    retries when `git pack-refs --prune` removes the loose ref under our feet.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            if new is None:
                return refs.remove_if_equals(name, old if old is not None else ZERO_SHA)
            return refs.set_if_equals(name, old if old is not None else ZERO_SHA, new)
        except FileLocked as locked:
            _break_if_stale(locked.lockfilename)
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise RefBusy(f"ref {name.decode()} stayed locked for {LOCK_WAIT_SECONDS:g} s")
        time.sleep(random.uniform(0.001, 0.01))


def _break_if_stale(lockfile: str) -> None:
    try:
        age = time.time() - os.stat(lockfile).st_mtime
        if age > STALE_LOCK_SECONDS:
            os.unlink(lockfile)
    except FileNotFoundError:
        pass
