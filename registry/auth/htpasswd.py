"""Users of an htpasswd file with bcrypt entries, as `htpasswd -B` writes them.

The file is read again whenever it changes (its size, mtime or inode), so adding a user
or changing a password needs no restart. Entries of other schemes (MD5, SHA-1, crypt) are
ignored with a warning: they are too cheap to guess.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import bcrypt

log = logging.getLogger("hroot.auth")

BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
# Checked passwords remembered (by a hash of user, password and entry), so that clients
# sending Basic credentials on every request pay for bcrypt once, not per request.
REMEMBERED = 1024


class Htpasswd:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, bytes] = {}
        self._good: dict[bytes, None] = {}
        self._load()  # a file that cannot be read at start is the operator's to fix: raise

    def _load(self) -> None:
        stat = os.stat(self.path)
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp == self._stamp:
            return
        entries = {}
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, sep, entry = line.partition(b":")
            if not sep or not entry.startswith(BCRYPT_PREFIXES):
                log.warning(
                    "%s line %d: not a bcrypt entry (htpasswd -B): ignored", self.path, number
                )
                continue
            entries[user.decode(errors="replace")] = entry
        self._entries, self._stamp, self._good = entries, stamp, {}
        self._stand_in = _stand_in(entries)
        log.info("%s: %d user(s)", self.path, len(entries))

    def _current(self) -> None:
        """Re-read the file if it changed; if it cannot be read, keep what was read last."""
        try:
            self._load()
        except OSError as e:
            log.error("cannot read %s, keeping the users read before: %s", self.path, e)

    def check(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s. Blocking (bcrypt): run it in a pool."""
        with self._lock:
            self._current()
            entry = self._entries.get(user)
            known = entry is not None
            entry = entry or self._stand_in
        if not known:  # as slow as for a known user: the time says nothing about who exists
            bcrypt.checkpw(password.encode(), entry)
            return False
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), entry))).digest()
        if key in self._good:
            return True
        try:
            good = bcrypt.checkpw(password.encode(), entry)
        except ValueError:  # a damaged entry
            log.warning("%s: the entry of %r is not a valid bcrypt hash", self.path, user)
            return False
        if good:
            with self._lock:
                if len(self._good) >= REMEMBERED:
                    self._good.pop(next(iter(self._good)))
                self._good[key] = None
        return good


def _stand_in(entries: dict[str, bytes]) -> bytes:
    """A hash to check the passwords of unknown users against, at the cost of a real entry
    (the two digits after the `$2y$` prefix), so that they take as long."""
    cost = next(iter(entries.values()))[4:6] if entries else b"10"
    rounds = int(cost) if cost.isdigit() and 4 <= int(cost) <= 31 else 10
    return bcrypt.hashpw(b"", bcrypt.gensalt(rounds))
