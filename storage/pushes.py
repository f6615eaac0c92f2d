"""Which commit pushed each manifest of a branch (docs/format.md §4): an index per branch,
for `hroot show` (Store.image) and the pages' push times.

Searching the first-parent history commit by commit in dulwich cost an early tag of a
10,000-tag repository 1.3 s; `git log --first-parent` with the Manifest-Digest trailer
reads the same 10,000 commits in a tenth of that, once. The index is kept per branch tip:
when the tip moves on, only the commits after the old tip are read (`OLD..NEW`); when the
old tip is no longer on the new first-parent history (`git branch -f`, a retention
rewrite), the whole history is read again. Git stays the source of truth: nothing is
written beside it. Blocking.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage import gitcli

_FORMAT = "%H%x00%P%x00%ct%x00%s%x00%(trailers:key=Manifest-Digest,valueonly,separator=%x01)%x1e"
_KEPT = 32  # branches whose index is kept (10,000 pushes: about 2 MB)


@dataclass(frozen=True)
class Pushed:
    """The commit that pushed a manifest."""

    commit: str
    time: datetime


@dataclass(frozen=True)
class _Record:
    commit: str
    parent: str | None  # the first
    time: datetime
    pushed: str | None  # the manifest a push commit names


class PushIndex:
    """manifest digest -> its newest push on a branch's first-parent history, per branch."""

    def __init__(self, gitdir: Path) -> None:
        self._gitdir = gitdir
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[str, dict[str, Pushed]]] = OrderedDict()

    def of(self, repo: str, tip: bytes) -> Mapping[str, Pushed]:
        """The pushes of the history ending at commit `tip` of repo's branch."""
        now = tip.decode()
        with self._lock:
            known = self._known.get(repo)
        if known is not None and known[0] == now:
            return known[1]
        pushed = self._extended(*known, now) if known is not None else None
        if pushed is None:
            pushed = _pushes(self._log(now))
        with self._lock:
            self._known[repo] = (now, pushed)
            self._known.move_to_end(repo)
            while len(self._known) > _KEPT:
                self._known.popitem(last=False)
        return pushed

    def find(self, repo: str, tip: bytes, digest: str) -> Pushed | None:
        """The newest push of manifest `digest` up to `tip`: from the index when it is up
        to date, else by one `git log --grep` that stops at the first match (an image page
        after a restart needs one push, not a whole 10,000-commit history read)."""
        with self._lock:
            known = self._known.get(repo)
        if known is not None and known[0] == tip.decode():
            return known[1].get(digest)
        matches = "--grep=^push ", f"--grep=^Manifest-Digest: {digest}$"
        found = _pushes(self._log("-1", "--all-match", *matches, tip.decode()))
        return found.get(digest)

    def _extended(self, old: str, pushed: dict[str, Pushed], new: str) -> dict[str, Pushed] | None:
        """`pushed` (of the history up to `old`) and the commits after it up to `new`, or
        the whole of new's history when that walk reached its root; None if neither."""
        records = self._log(f"{old}..{new}")
        if records and records[-1].parent == old:
            return {**pushed, **_pushes(records)}
        if records and records[-1].parent is None:  # nothing of old's history left
            return _pushes(records)
        return None

    def _log(self, *revisions: str) -> list[_Record]:
        """The first-parent commits of `revisions`, newest first."""
        out = gitcli.run(
            self._gitdir, "log", "--first-parent", f"--format={_FORMAT}", *revisions, "--"
        )
        return [_record(text) for text in out.split("\x1e") if text.strip("\n")]


def _record(text: str) -> _Record:
    commit, parents, time, summary, digest = text.strip("\n").split("\x00")
    return _Record(
        commit,
        parents.split(" ", 1)[0] or None,
        datetime.fromtimestamp(int(time), UTC),
        (digest.split("\x01", 1)[0] or None) if summary.startswith("push ") else None,
    )


def _pushes(records: list[_Record]) -> dict[str, Pushed]:
    """Each digest's newest push among `records` (newest first)."""
    found: dict[str, Pushed] = {}
    for record in records:
        if record.pushed is not None:
            found.setdefault(record.pushed, Pushed(record.commit, record.time))
    return found
