"""Which commit pushed each manifest of a branch (docs/format.md §4): an index per branch,
for `hroot show` (Store.image) and the pages' push times.

Searching the first-parent history commit by commit in dulwich cost an early tag of a
10,000-tag repository 1.3 s; `git log --first-parent`, each push's digest taken from its
first line by one regular expression, reads the same 10,000 commits in a tenth of that.
The index is kept per branch tip: when the tip moves on, only the commits after the old
tip are read (`OLD..NEW`); when the old tip is no longer on the new first-parent history
(`git branch -f`, a retention rewrite), the whole history is read again. Git stays the
source of truth: nothing is written beside it. Blocking.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage import gitcli

_FORMAT = "%H%x00%P%x00%ct%x00%s%x1e"
# A push commit in that format: its first line names the manifest last (docs/format.md §4:
# `push NAME:TAG DIGEST` or `push NAME@DIGEST`), which git prints faster than the trailer.
_PUSH = re.compile(
    r"([0-9a-f]{40,64})\x00[^\x00]*\x00(\d+)\x00"  # commit, parents, time
    r"push [^\x00\x1e]*?[ @]((?:sha256|sha512):[0-9a-f]+)\x1e"  # first line, its digest
)
_KEPT = 32  # branches whose index is kept (10,000 pushes: about 2 MB)
_FOUND_KEPT = 10_000  # answers of `find` kept, by tip commit and digest


@dataclass(frozen=True)
class Pushed:
    """The commit that pushed a manifest."""

    commit: str
    time: datetime


Raw = dict[str, tuple[str, str]]  # digest -> (commit, commit time in seconds)


class Pushes(Mapping[str, Pushed]):
    """A branch's index, each push made a Pushed only when asked for: a tags page asks
    for 100 of 10,000."""

    def __init__(self, raw: Raw) -> None:
        self._raw = raw

    def __getitem__(self, digest: str) -> Pushed:
        commit, seconds = self._raw[digest]
        return Pushed(commit, datetime.fromtimestamp(int(seconds), UTC))

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


_NONE_READ = "none read"  # _Log.oldest_parent when the range held no commit


@dataclass(frozen=True)
class _Log:
    """What `git log` said of a range of first-parent commits."""

    pushes: Raw  # each digest's newest push among them
    oldest_parent: str | None  # the first parent of the oldest (None: it is a root)


class PushIndex:
    """manifest digest -> its newest push on a branch's first-parent history, per branch."""

    def __init__(self, gitdir: Path) -> None:
        self._gitdir = gitdir
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[str, Raw]] = OrderedDict()
        self._found: OrderedDict[tuple[bytes, str], Pushed | None] = OrderedDict()  # by find

    def of(self, repo: str, tip: bytes) -> Mapping[str, Pushed]:
        """The pushes of the history ending at commit `tip` of repo's branch."""
        now = tip.decode()
        with self._lock:
            known = self._known.get(repo)
        if known is not None and known[0] == now:
            return Pushes(known[1])
        pushed = self._extended(*known, now) if known is not None else None
        if pushed is None:
            pushed = self._log(now).pushes
        with self._lock:
            self._known[repo] = (now, pushed)
            self._known.move_to_end(repo)
            while len(self._known) > _KEPT:
                self._known.popitem(last=False)
        return Pushes(pushed)

    def has(self, repo: str) -> bool:
        """Whether repo's index is kept, as of some tip: bringing it up to the branch's
        tip then reads only the commits since (unless the branch was rewritten)."""
        with self._lock:
            return repo in self._known

    def find(self, repo: str, tip: bytes, digest: str) -> Pushed | None:
        """The newest push of manifest `digest` up to `tip`: from the index when it is up
        to date, else by one `git log --grep` that stops at the first match (an image page
        after a restart needs one push, not a whole 10,000-commit history read)."""
        with self._lock:
            known = self._known.get(repo)
            if known is not None and known[0] == tip.decode():
                return Pushes(known[1]).get(digest)
            if (tip, digest) in self._found:
                return self._found[(tip, digest)]
        matches = "--grep=^push ", f"--grep=^Manifest-Digest: {digest}$"
        found = Pushes(self._log("-1", "--all-match", *matches, tip.decode()).pushes).get(digest)
        with self._lock:
            self._found[(tip, digest)] = found
            while len(self._found) > _FOUND_KEPT:
                self._found.popitem(last=False)
        return found

    def _extended(self, old: str, pushed: Raw, new: str) -> Raw | None:
        """`pushed` (of the history up to `old`) and the commits after it up to `new`, or
        the whole of new's history when that walk reached its root; None if neither."""
        read = self._log(f"{old}..{new}")
        if read.oldest_parent == old:
            return {**pushed, **read.pushes}
        if read.oldest_parent is None:  # nothing of old's history left
            return read.pushes
        return None

    def _log(self, *revisions: str) -> _Log:
        """The first-parent commits of `revisions`, newest first, read by one regular
        expression: 10,000 of them for a first tags page after a restart."""
        out = gitcli.run(
            self._gitdir, "log", "--first-parent", f"--format={_FORMAT}", *revisions, "--"
        )
        newest_first = _PUSH.findall(out)
        found = {digest: (commit, seconds) for commit, seconds, digest in reversed(newest_first)}
        oldest = out.rstrip("\n\x1e").rpartition("\x1e")[2].strip("\n")
        if not oldest:
            return _Log(found, _NONE_READ)
        parents = oldest.split("\x00")[1]
        return _Log(found, parents.split(" ", 1)[0] or None)
