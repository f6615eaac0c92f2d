"""`hroot fsck`: everything that can be wrong in a registry, and the repair of what is
hroot's own (docs/format.md §5); no printing here (registry/cli/fsck.py prints).

Three sources of problems: storage.verify over every branch's tip (the OCI layout
hroot serves), `git fsck` (the git objects themselves, all history included), and
hroot's leftovers beside the branches: stale ref locks, staging refs whose branch is
gone, staged blobs whose bytes are not their digest, bundle refs never cleaned up, and
filesystem views (docs/format.md §9) whose branch is gone.

Checking only reads, so it runs beside a server. A repair removes leftovers only,
never a branch, commit or blob a branch holds, and each removal is safe against a
server that writes meanwhile: a ref goes by compare-and-swap from the value checked,
a staging entry only while the staging ref is unchanged, a lock only while it is
still stale. Refs a running push or bundle apply holds for a while are left alone
until they are `LEFTOVER_SECONDS` old.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.repo import Repo

from storage import gc, names, refs
from storage.digests import Digest
from storage.fsview import FS_PREFIX
from storage.layout import ObjectCache, TreeWriter
from storage.objects import ObjectBatch
from storage.transport import INCOMING_PREFIX
from storage.verify import Checker

# A first push stages its blobs before its manifest makes the branch, and a bundle apply
# holds its incoming refs while it checks them; a day old, neither is running any more.
LEFTOVER_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class StaleLock:
    """A ref lock file older than refs.STALE_LOCK_SECONDS: its writer died."""

    path: Path


@dataclass(frozen=True)
class DeadRef:
    """A staging ref without its branch, or an incoming ref a bundle apply left."""

    ref: bytes
    oid: bytes


@dataclass(frozen=True)
class BadStagedBlob:
    """A staged blob whose bytes are not its digest (or are lost): no push may take it in."""

    ref: bytes
    digest: Digest


Leftover = StaleLock | DeadRef | BadStagedBlob


@dataclass(frozen=True)
class Problem:
    """One line for a person; `repository` None for the registry as a whole, `leftover`
    set when `repair` may remove the cause."""

    repository: str | None
    text: str
    leftover: Leftover | None = None


@dataclass
class Report:
    repositories: int = 0
    blobs: int = 0  # distinct blobs the branches' tips hold, each hashed
    size: int = 0  # their bytes
    problems: list[Problem] = field(default_factory=list)


def check(gitdir: Path) -> Report:
    """Every problem of the registry at `gitdir`; reads only."""
    report = Report()
    with Checker(gitdir) as checker:
        tips = checker.tips()
        for ref, commit in sorted(tips.items()):
            encoded = ref.encode().removeprefix(names.BRANCH_PREFIX)
            prefix = f"{ref.removeprefix('refs/heads/')}: "
            report.problems += [
                Problem(names.decode(encoded), line.removeprefix(prefix))
                for line in checker.branch(ref, commit)
            ]
        report.repositories = len(tips)
        report.blobs, report.size = checker.hashed()
        report.problems += _staging(gitdir, checker, set(tips))
    report.problems += _incoming(gitdir)
    report.problems += _fs_views(gitdir, set(tips))
    report.problems += _stale_locks(gitdir)
    report.problems += _git_fsck(gitdir)
    return report


def repair(gitdir: Path, report: Report) -> list[str]:
    """Remove the leftovers `report` found, each only if it is still as found; what was
    removed, one line each."""
    removed: list[str] = []
    repo = Repo(str(gitdir))
    try:
        bad: dict[bytes, list[Digest]] = {}
        for problem in report.problems:
            match problem.leftover:
                case StaleLock(path) if gc.age(path) > refs.STALE_LOCK_SECONDS:
                    path.unlink(missing_ok=True)
                    removed.append(f"removed stale lock {path.relative_to(gitdir)}")
                case DeadRef(ref, oid) if refs.compare_and_swap(repo.refs, ref, oid, None):
                    removed.append(f"removed {ref.decode()} ({oid.decode()[:12]})")
                case BadStagedBlob(ref, digest):
                    bad.setdefault(ref, []).append(digest)
        for ref, digests in bad.items():
            if _unstage(repo, ref, digests):
                removed += [f"removed {d} from {ref.decode()}" for d in digests]
    finally:
        repo.close()
    return removed


def _staging(gitdir: Path, checker: Checker, branches: set[str]) -> list[Problem]:
    found: list[Problem] = []
    repo = Repo(str(gitdir))
    try:
        staging = repo.refs.as_dict(names.STAGING_PREFIX)
        for encoded, oid in sorted(staging.items()):
            ref = names.STAGING_PREFIX + encoded
            name = names.decode(encoded)
            if (names.BRANCH_PREFIX + encoded).decode() not in branches:
                if _ref_age(gitdir, ref) > LEFTOVER_SECONDS:
                    text = f"{ref.decode()}: staged blobs of a repository that does not exist"
                    found.append(Problem(name, text, DeadRef(ref, oid)))
                continue  # its blobs go with it; a young one is a first push under way
            for digest, line in checker.blobs(oid):
                leftover = BadStagedBlob(ref, digest) if digest is not None else None
                found.append(Problem(name, f"staged {line}", leftover))
    finally:
        repo.close()
    return found


def _incoming(gitdir: Path) -> list[Problem]:
    repo = Repo(str(gitdir))
    try:
        held = repo.refs.as_dict(INCOMING_PREFIX.encode())
    finally:
        repo.close()
    found = []
    for rest, oid in sorted(held.items()):
        ref = INCOMING_PREFIX.encode() + rest
        if _ref_age(gitdir, ref) > LEFTOVER_SECONDS:
            text = f"{ref.decode()}: left by a bundle apply that did not finish"
            found.append(Problem(None, text, DeadRef(ref, oid)))
    return found


def _fs_views(gitdir: Path, branches: set[str]) -> list[Problem]:
    """Filesystem views (docs/format.md §9) of repositories that no longer exist (a
    `git branch -D`): `hroot rm` drops the view with the branch."""
    repo = Repo(str(gitdir))
    try:
        views = repo.refs.as_dict(FS_PREFIX)
    finally:
        repo.close()
    found = []
    for encoded, oid in sorted(views.items()):
        if (names.BRANCH_PREFIX + encoded).decode() not in branches:
            text = f"{(FS_PREFIX + encoded).decode()}: the view of a repository that does not exist"
            found.append(Problem(names.decode(encoded), text, DeadRef(FS_PREFIX + encoded, oid)))
    return found


def _stale_locks(gitdir: Path) -> list[Problem]:
    return [
        Problem(None, f"stale lock file {lock.relative_to(gitdir)}", StaleLock(lock))
        for lock in gc.stale_locks(gitdir)
    ]


def _git_fsck(gitdir: Path) -> list[Problem]:
    """`git fsck`'s complaints, one problem a line (its notices, such as an unborn HEAD,
    are no problem of a bare registry)."""
    command = ["git", "--git-dir", str(gitdir), "fsck", "--full", "--strict", "--no-dangling"]
    done = subprocess.run(
        [*command, "--no-progress"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    lines = [
        line.strip()
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not line.startswith("notice:")
    ]
    if done.returncode != 0 and not lines:
        lines = [f"exited with status {done.returncode}"]
    return [Problem(None, f"git fsck: {line}") for line in lines]


def _unstage(repo: Repo, ref: bytes, remove: list[Digest]) -> bool:
    """Take `remove` off staging ref `ref`, retrying if a server moves it meanwhile;
    False if the ref is gone or no longer holds them (a push took them in: not ours)."""
    cache = ObjectCache(repo.object_store)
    checker = Checker(Path(repo.controldir()))
    try:
        while True:
            staged = refs.read(repo.refs, ref)
            if staged is None:
                return False
            still_bad = {d for d, _ in checker.blobs(staged) if d is not None}
            if not set(remove) <= still_bad:
                return False
            with ObjectBatch(repo.object_store) as batch:
                new = TreeWriter(batch, cache).staging(staged, remove=remove)
                batch.install()
            if refs.compare_and_swap(repo.refs, ref, staged, new):
                return True
    finally:
        checker.close()


def _ref_age(gitdir: Path, ref: bytes) -> float:
    return time.time() - gc.ref_mtime(gitdir, ref)
