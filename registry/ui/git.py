"""What the history page reads with `git log`: a repository's first-parent commits and what
their trailers say (docs/format.md §4), for the graph.

The store's own `log` reads each commit's index.json to tell which tags moved, which costs
a page of a 10,000-tag repository seconds; the trailers say enough for a graph, and git
walks 10,000 commits in a fifth of a second. Blocking: run in the read pool.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage import names

# `Base-Image: repo@digest`, or for one platform of an index `repo@digest (os/arch[/variant])`
_BASE_IMAGE = re.compile(r"^(\S+)@(\S+)(?: \((\S+)\))?$")
_FIELDS = "%H%x00%P%x00%ct%x00%s%x00" + "%x00".join(
    f"%(trailers:key={key},valueonly,separator=%x01)"
    for key in ("Manifest-Digest", "Tag", "Previous-Digest", "Base-Image")
)
_RECORD = "\x1e"


@dataclass(frozen=True)
class Base:
    repository: str
    digest: str
    platform: str | None


@dataclass(frozen=True)
class Commit:
    """One commit of a repository's own history, as its message says it."""

    id: str
    parents: list[str]  # the first is the previous commit; others are lineage parents
    time: datetime
    summary: str
    action: str  # push, delete, create, or commit for one hroot did not write
    digest: str | None  # Manifest-Digest
    tags: list[str]
    previous: str | None  # Previous-Digest: what the tag named before
    bases: list[Base]


def commits(data: Path, name: str, skip: int, n: int) -> list[Commit]:
    """Up to n commits of the repository's own history after the newest `skip`, newest
    first ([] once its branch is gone)."""
    return _log(data, names.branch_ref(name).decode(), f"--skip={skip}", f"--max-count={n}")


def tip(data: Path, name: str) -> str | None:
    found = _git(data, "rev-parse", "--verify", "--quiet", names.branch_ref(name).decode())
    return found.strip() or None


def _log(data: Path, start: str, *flags: str) -> list[Commit]:
    """The first-parent history from `start` (a ref or a commit id)."""
    out = _git(data, "log", "--first-parent", f"--format={_FIELDS}{_RECORD}", *flags, start, "--")
    return [_commit(record) for record in out.split(_RECORD) if record.strip("\n")]


def _commit(record: str) -> Commit:
    oid, parents, time, summary, digest, tags, previous, bases = record.strip("\n").split("\x00")
    action = summary.split(" ", 1)[0]
    return Commit(
        id=oid,
        parents=parents.split(),
        time=datetime.fromtimestamp(int(time), UTC),
        summary=summary,
        action=action if action in ("push", "delete", "create") else "commit",
        digest=digest.split("\x01")[0] or None,
        tags=[tag for tag in tags.split("\x01") if tag],
        previous=previous.split("\x01")[0] or None,
        bases=[
            Base(match.group(1), match.group(2), match.group(3))
            for value in bases.split("\x01")
            if (match := _BASE_IMAGE.match(value)) is not None
        ],
    )


def _git(data: Path, *args: str) -> str:
    """git's output; an empty one when the ref is gone (a repository removed meanwhile)."""
    done = subprocess.run(
        ["git", "--git-dir", str(data), *args],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0 and done.stdout == b"":
        return ""
    return done.stdout.decode(errors="replace")
