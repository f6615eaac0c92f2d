"""Housekeeping by git itself: `git gc --auto` now and then, in the background.

Every push rewrites index.json and the blobs tree whole, as loose objects: 10,000
tags pushed one by one left 5 GB of them, which git packs (as deltas between
versions) into a few MB. git decides whether there is anything to do (gc.auto);
hroot only asks it every `every` commits, one run at a time, never in the way of
a request. git's gc is made to run beside writers: hroot's readers retry when an
object moves into a pack, and its ref updates when refs get packed.

Commits alone are a poor measure: git counts loose objects (gc.auto, 6,700), and
10,000 tag pushes left 4 GiB of loose index.json versions before it agreed to pack
them. So the bytes written are counted too, big blobs included, and after
`every_bytes` of them git is told to pack whatever is loose (gc.auto=1).
`run_lock` is held while git runs; `hroot gc` (storage.gc) holds it too, so the
two never overlap.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

log = logging.getLogger("hroot.storage")

GC_BYTES = 1 << 30  # bytes of objects written between two `git gc --auto`


class Maintenance:
    def __init__(self, gitdir: Path, every: int, every_bytes: int = GC_BYTES) -> None:
        self._gitdir = gitdir
        self._every = every
        self._every_bytes = every_bytes
        self._count = 0
        self._bytes = 0
        self._running = False
        self._lock = threading.Lock()
        self.run_lock = threading.Lock()
        self.runs = 0  # `git gc --auto` runs started, for the registry's metrics

    def committed(self, count: int = 1, size: int = 0) -> None:
        """Count commits and the bytes of objects written; start `git gc --auto` after
        `every` commits or `every_bytes` bytes, unless one runs (0: never)."""
        with self._lock:
            self._count += count
            self._bytes += size
            by_bytes = 0 < self._every_bytes <= self._bytes
            if self._every <= 0 or self._running:
                return
            if self._count < self._every and not by_bytes:
                return
            self._count, self._bytes, self._running = 0, 0, True
        threading.Thread(
            target=self._gc, args=(by_bytes,), name="hroot-git-gc", daemon=True
        ).start()

    def wrote(self, size: int) -> None:
        """Count the bytes of a blob written outside a commit (an upload, an import)."""
        self.committed(0, size)

    def _gc(self, pack_loose: bool) -> None:
        if not self.run_lock.acquire(blocking=False):  # `hroot gc` runs: it packs everything
            with self._lock:
                self._running = False
            return
        settings = ["-c", "gc.auto=1"] if pack_loose else []
        self.runs += 1
        try:
            done = subprocess.run(
                ["git", "--git-dir", str(self._gitdir), *settings, "gc", "--auto", "--quiet"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if done.returncode != 0:
                log.warning("git gc --auto failed: %s", done.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as error:
            log.warning("git gc --auto did not run: %s", error)
        finally:
            self.run_lock.release()
            with self._lock:
                self._running = False
