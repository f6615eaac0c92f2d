"""Registries across an air gap: git bundles of `hroot/*` branches (docs/format.md §7).

A bundle is a file `git bundle create` writes and `git fetch` reads, so `git bundle
verify FILE` checks one without hroot. An incremental bundle (`since`) leaves out what
an earlier bundle, or the history before a date, holds; it records the commits it
builds on as prerequisites, and git refuses to apply it where they are missing.

Applying one fetches its branches where no client reads (storage.transport.incoming),
checks them as `hroot fsck` does (storage.verify: git proves the objects whole, not
that a file named by a digest holds those bytes), and only then moves the registry's
branches, never deleting others: a damaged bundle changes nothing a client can see.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.repo import Repo

from storage import names, refs, transport, verify
from storage.errors import StoreError


class BundleError(StoreError):
    message = "bundle"


class BundleRejected(BundleError):
    """A bundle whose branches failed the checks: `problems` says why, nothing moved."""

    def __init__(self, file: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s); no repository changed",
            message=f"{file}: the bundle's images are damaged",
        )


@dataclass(frozen=True)
class Created:
    """What `create` wrote: the repositories in the bundle; none when nothing was new
    (git writes no empty bundle, so the file was left as it was)."""

    file: Path
    repositories: list[str] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class Applied:
    """What `apply` changed: repositories new here, and ones that moved to the bundle's
    commit; `kept`: ones already newer here (the bundle's commit is in their past)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def create(
    gitdir: Path, file: Path, repositories: list[str] | None = None, since: str | None = None
) -> Created:
    """Write a bundle of these repositories (None or empty: all) to `file`.

    `since` is an earlier bundle (a file: only what it lacks travels) or a date as git
    reads it (`2024-05-01`, `2 weeks ago`: only commits after it travel). Written beside
    `file` and renamed, so no half bundle ever has its name.
    """
    branches = transport.branches(gitdir)
    if repositories:
        wanted = [names.branch_ref(name).decode() for name in repositories]
        unknown = [
            name for name, ref in zip(repositories, wanted, strict=True) if ref not in branches
        ]
        if unknown:
            raise BundleError(", ".join(unknown), message="no such repository")
    else:
        wanted = sorted(branches)
    if not wanted:
        raise BundleError(str(gitdir), message="the registry has no repositories")
    revisions = [*_since(gitdir, since), *wanted]
    if _git(gitdir, "rev-list", "--count", *revisions).stdout.strip() == "0":
        return Created(file)  # git would refuse to write a bundle of nothing
    partial = file.with_name(f".{file.name}.{secrets.token_hex(4)}.partial")
    try:
        done = _git(gitdir, "bundle", "create", str(partial), *revisions, progress=True)
        if done.returncode != 0:
            raise BundleError(_last_line(done.stderr), message="git could not write the bundle")
        os.replace(partial, file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Created(file, _repositories(heads(gitdir, file)), file.stat().st_size)


def heads(gitdir: Path, file: Path) -> dict[str, str]:
    """The `hroot/*` branches a bundle holds and their commits."""
    done = _git(gitdir, "bundle", "list-heads", str(file))
    if done.returncode != 0:
        raise BundleError(_last_line(done.stderr) or file, message="not a readable bundle")
    listed = (line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    prefix = names.BRANCH_PREFIX.decode()
    return {ref: oid for oid, ref in listed if ref.startswith(prefix)}


def apply(gitdir: Path, file: Path) -> Applied:
    """Fetch the bundle's branches into the registry at `gitdir`, check what came, and
    put every branch it moved back if anything is wrong (BundleRejected)."""
    if not heads(gitdir, file):
        raise BundleError(file, message="the bundle holds no hroot/ branches")
    _check_prerequisites(gitdir, file)
    with transport.incoming(gitdir, str(file)) as fetched:
        current = transport.branches(gitdir)
        changed = {ref: new for ref, new in fetched.items() if current.get(ref) != new}
        added = [ref for ref in changed if ref not in current]
        kept = [
            ref
            for ref in changed
            if ref in current and _ancestor(gitdir, changed[ref], current[ref])
        ]
        updated = [ref for ref in changed if ref in current and ref not in kept]
        problems = verify.check(gitdir, {ref: changed[ref] for ref in added + updated})
        if problems:
            raise BundleRejected(file, problems)
        moves = {ref: (current.get(ref), changed[ref]) for ref in added + updated}
        moved_meanwhile = _move(gitdir, moves)
    if moved_meanwhile:
        raise BundleError(
            ", ".join(moved_meanwhile), message="pushed to while the bundle was applied; not moved"
        )
    return Applied(_repositories(added), _repositories(updated), _repositories(kept))


def _since(gitdir: Path, since: str | None) -> list[str]:
    """rev-list arguments that leave out what `since` (a bundle file or a date) covers."""
    if since is None:
        return []
    if Path(since).is_file():
        # Commits this registry no longer has (a branch deleted and gc'd) exclude nothing.
        return ["--ignore-missing", *(f"^{oid}" for oid in heads(gitdir, Path(since)).values())]
    if os.sep in since or since.endswith(".bundle"):
        raise BundleError(since, message="no such bundle")
    # git reads any text as some date, and text it cannot read as now: a typo must not
    # pass for "nothing new since"
    read = _git(gitdir, "rev-parse", f"--since={since}").stdout.strip()
    if since.strip() != "now" and int(read.removeprefix("--max-age=")) >= time.time() - 1:
        raise BundleError(since, message="neither a bundle nor a past date (as git reads dates)")
    return [f"--since={since}"]


def _check_prerequisites(gitdir: Path, file: Path) -> None:
    done = _git(gitdir, "bundle", "verify", str(file))
    if done.returncode == 0:
        return
    if "lacks these prerequisite commits" in done.stderr:
        lacking = [line.split()[1] for line in done.stderr.splitlines()[1:] if " " in line]
        raise BundleError(
            f"{len(lacking)} commit(s) it builds on, e.g. {lacking[0][:12]}" if lacking else None,
            message=f"{file} is incremental: apply the bundle it was made after first",
        )
    raise BundleError(_last_line(done.stderr) or file, message="not a valid bundle")


def _ancestor(gitdir: Path, commit: str, of: str) -> bool:
    return _git(gitdir, "merge-base", "--is-ancestor", commit, of).returncode == 0


def _move(gitdir: Path, moves: dict[str, tuple[str | None, str]]) -> list[str]:
    """Move each checked branch from the commit it had (None: none) to the bundle's; the
    repositories of branches pushed to meanwhile, which are left as the push made them."""
    left: list[str] = []
    repo = Repo(str(gitdir))
    try:
        for ref, (old, new) in sorted(moves.items()):
            expected = old.encode() if old is not None else None
            if not refs.compare_and_swap(repo.refs, ref.encode(), expected, new.encode()):
                left.append(ref)
    finally:
        repo.close()
    return _repositories(left)


def _repositories(branch_refs: Iterable[str]) -> list[str]:
    prefix = names.BRANCH_PREFIX
    return sorted(names.decode(ref.encode().removeprefix(prefix)) for ref in branch_refs)


def _git(gitdir: Path, *args: str, progress: bool = False) -> subprocess.CompletedProcess[str]:
    """Run git; its stderr is captured, unless `progress` asks for it on a terminal (git
    shows progress only there), where git's own messages then say what went wrong."""
    shown = progress and sys.stderr.isatty()
    try:
        return subprocess.run(
            ["git", "--git-dir", str(gitdir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if shown else subprocess.PIPE,
            text=True,
        )
    except OSError as error:
        raise BundleError(str(error), message="could not run git") from None


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else ""
