"""A repository's first-parent commits as `git log` reads them, with what their trailers
say (docs/format.md §4): the history page's graph (Store.commit_log).

Store.log reads each commit's index.json to tell which tags moved, which costs a page of
a 10,000-tag repository seconds; the trailers say enough for a graph, and git walks
10,000 commits in a fifth of a second. Blocking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage import gitcli

# `Base-Image: repo@digest`, or for one platform of an index `repo@digest (os/arch[/variant])`
BASE_IMAGE = re.compile(r"^(\S+)@(\S+)(?: \((\S+)\))?$")
_FIELDS = "%H%x00%P%x00%ct%x00%s%x00" + "%x00".join(
    f"%(trailers:key={key},valueonly,separator=%x01)"
    for key in ("Manifest-Digest", "Tag", "Previous-Digest", "Base-Image")
)
_RECORD = "\x1e"
ACTIONS = ("push", "delete", "create")  # the first words of hroot's commits (§4)


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


def commits(gitdir: Path, tip: str, skip: int, n: int) -> list[Commit]:
    """Up to n commits of the first-parent history from commit `tip` after the newest
    `skip`, newest first."""
    flags = f"--format={_FIELDS}{_RECORD}", f"--skip={skip}", f"--max-count={n}"
    out = gitcli.run(gitdir, "log", "--first-parent", *flags, tip, "--")
    return [_commit(record) for record in out.split(_RECORD) if record.strip("\n")]


def _commit(record: str) -> Commit:
    oid, parents, time, summary, digest, tags, previous, bases = record.strip("\n").split("\x00")
    action = summary.split(" ", 1)[0]
    return Commit(
        id=oid,
        parents=parents.split(),
        time=datetime.fromtimestamp(int(time), UTC),
        summary=summary,
        action=action if action in ACTIONS else "commit",
        digest=digest.split("\x01")[0] or None,
        tags=[tag for tag in tags.split("\x01") if tag],
        previous=previous.split("\x01")[0] or None,
        bases=[
            Base(match.group(1), match.group(2), match.group(3))
            for value in bases.split("\x01")
            if (match := BASE_IMAGE.match(value)) is not None
        ],
    )
