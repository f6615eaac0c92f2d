"""Housekeeping by git itself: `git gc --auto` now and then, in the background.

Every push rewrites index.json and the blobs tree whole, as loose objects: 10,000
tags pushed one by one left 5 GB of them, which git packs (as deltas between
versions) into a few MB. git decides whether there is anything to do (gc.auto);
hroot only asks it every `every` commits, one run at a time, never in the way of
a request. git's gc is made to run beside writers: hroot's readers retry when an
object moves into a pack, and its ref updates when refs get packed.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

log = logging.getLogger("hroot.storage")


class Maintenance:
    def __init__(self, gitdir: Path, every: int) -> None:
        self._gitdir = gitdir
        self._every = every
        self._count = 0
        self._running = False
        self._lock = threading.Lock()

    def committed(self, count: int = 1) -> None:
        """Count commits; every `every` of them, start `git gc --auto` unless one runs."""
        with self._lock:
            self._count += count
            if self._every <= 0 or self._count < self._every or self._running:
                return
            self._count, self._running = 0, True
        threading.Thread(target=self._gc, name="hroot-git-gc", daemon=True).start()

    def _gc(self) -> None:
        try:
            done = subprocess.run(
                ["git", "--git-dir", str(self._gitdir), "gc", "--auto", "--quiet"],
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
            with self._lock:
                self._running = False
