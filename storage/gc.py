"""`hroot gc`: remove what abandoned writes left behind, then let git repack and prune.

What goes (docs/format.md §5), each only once older than `expiry`:
- upload spools (`hroot/uploads/<id>`), by the newest mtime in the folder: every
  write of an upload appends to its spool, so an upload in progress stays young; a
  spool whose writer holds its lock right now is never taken;
- `tmp_obj_*` files in `objects/` (blobs whose writer died);
- staging refs, whole, when the ref has not changed for `expiry`: staging entries
  carry no time, but every blob on a staging tree was staged at or before the ref's
  last change (its loose file's mtime; for a packed ref, that of packed-refs, which
  is later). This is also how the staged blobs of a deleted repository stop being
  served under its name: a repository's first push stages blobs before its branch
  exists, so a missing branch alone does not tell a deleted repository from a new one;
- `refs/hroot/incoming/…` refs of a bundle apply that died, by the same age;
- ref lock files older than refs.STALE_LOCK_SECONDS, whatever `expiry` is.

Then `git repack -A -d --unpack-unreachable=<cutoff>` (unreachable packed objects
become loose, keeping their pack's mtime, unless the pack is older than the cutoff:
then they go with it), `git prune --expire=<cutoff>`, which removes unreachable loose
objects older than the cutoff, and `git commit-graph write --reachable`. The cutoff
is `expiry` (and a second of slack for coarse file times) before the moment every write
of this process then under way had ended (WriteGate): such a write's objects are named
by a ref by then, and a later write's objects are younger than the cutoff. Writes never
wait for gc.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Tree
from dulwich.refs import DiskRefsContainer

from storage import gitcli, names, refs
from storage.errors import GitFailed, StoreError
from storage.retention import Dropped
from storage.transport import INCOMING_PREFIX

EXPIRY_SECONDS = 24 * 3600.0
# File times lag the clock: the kernel stamps them from a coarse clock (a tick, some
# milliseconds, behind time.time()), so a file written just after gc's cutoff can look
# older than it. What gc judges by mtime must be older than the cutoff by this much more.
MTIME_SLACK_SECONDS = 1.0
# How much older than `expiry` an object must be for this gc to prune it: the slack, and
# git prune's whole seconds (collect)
PRUNE_GRANULARITY_SECONDS = MTIME_SLACK_SECONDS + 2
# An expiry shorter than this is refused while another process has the registry open: its
# writes under way are kept from this gc by the expiry alone, and none lasts this long.
ALONE_EXPIRY_SECONDS = 3600.0
# With no other hroot process on the registry, a ref lock older than this is a crash's:
# git holds a ref's lock for milliseconds, and gives up on packed-refs.lock after 1 s.
ALONE_STALE_LOCK_SECONDS = 1.0
OPEN_LOCK = Path("hroot") / "open.lock"  # shared by every open Store (Presence)
GC_LOCK = Path("hroot") / "gc.lock"  # held by the gc running, whichever process runs it
STEPS = ("retain", "locks", "uploads", "refs", "repack", "prune")  # in the order gc reports them

Step = Callable[[str], None]  # told the name of each step as it begins


@dataclass
class Usage:
    """What `objects/` and the upload spools hold: git's object count, bytes on disk."""

    objects: int
    bytes: int


@dataclass
class GcReport:
    """What one gc run removed and what it left."""

    spools: int = 0
    spool_bytes: int = 0
    tmp_files: int = 0
    tmp_bytes: int = 0
    staging_refs: int = 0
    staged_blobs: int = 0
    incoming_refs: int = 0
    locks: int = 0
    before: Usage = field(default_factory=lambda: Usage(0, 0))
    after: Usage = field(default_factory=lambda: Usage(0, 0))
    seconds: float = 0.0
    dropped: Dropped | None = None  # by retention (storage.retention), when asked for

    @property
    def reclaimed(self) -> int:
        return self.before.bytes - self.after.bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reclaimed": self.reclaimed}

    def summary(self) -> str:
        """One line, for a log."""
        retained = f"retention dropped {self.dropped.summary()}; " if self.dropped else ""
        return retained + (
            f"removed {self.spools} upload spools, {self.tmp_files} tmp files, "
            f"{self.staging_refs} staging refs ({self.staged_blobs} staged blobs), "
            f"{self.incoming_refs} incoming refs, {self.locks} stale locks; "
            f"{self.before.objects} objects {self.before.bytes} bytes -> "
            f"{self.after.objects} objects {self.after.bytes} bytes, "
            f"reclaimed {self.reclaimed} bytes in {self.seconds:.1f}s"
        )


class WriteGate:
    """Lets gc wait for the writes of this process under way when it starts, and never
    for later ones (which would stall every push behind one long upload).

    A write holds the gate from its first object to the ref that names it. gc takes
    a cutoff time, waits until every write that began before it has ended, and then
    removes only what is older than the cutoff (less the expiry): an object of a write
    that began later is younger than that. A thread's nested writes (put_blob spooling
    through an upload) count once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._under_way: set[int] = set()  # one token per outermost write
        self._tokens = itertools.count()
        self._depth = threading.local()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        token = None
        if depth == 0:
            token = next(self._tokens)
            with self._cond:
                self._under_way.add(token)
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if token is not None:
                with self._cond:
                    self._under_way.discard(token)
                    self._cond.notify_all()

    def settled(self) -> float:
        """Wait until every write under way now has ended; the time gc may count from."""
        cutoff = time.time()
        with self._cond:
            before = set(self._under_way)
            self._cond.wait_for(lambda: not before & self._under_way)
        return cutoff


class NotAlone(StoreError):
    message = "another process has this registry open"


class Presence:
    """A shared lock on `hroot/open.lock`, held while a Store is open, so that a gc can tell
    whether another process (or another Store) may be writing beside it: the WriteGate
    sees its own process's writes only."""

    def __init__(self, gitdir: Path) -> None:
        self._file = None
        with contextlib.suppress(OSError):  # a registry on read-only media writes nothing
            (gitdir / OPEN_LOCK).parent.mkdir(exist_ok=True)
            self._file = open(gitdir / OPEN_LOCK, "ab")  # noqa: SIM115 (closed in close)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_SH)

    def alone(self) -> bool:
        """Whether no one else holds the lock now (checked by taking it exclusively)."""
        if self._file is None:
            return True
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._file.fileno(), fcntl.LOCK_SH)
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def stale_locks(gitdir: Path, older_than: float = refs.STALE_LOCK_SECONDS) -> list[Path]:
    """Ref lock files older than `older_than` seconds (by default older than any live
    writer holds one: a crash's)."""
    # os.walk, not Path.rglob: `git pack-refs --prune` beside us removes emptied ref
    # folders mid-walk, which rglob raises on and os.walk passes over.
    locks = [
        Path(folder, name)
        for folder, _, files in os.walk(gitdir / "refs")
        for name in files
        if name.endswith(".lock")
    ]
    locks.append(gitdir / "packed-refs.lock")
    return sorted(lock for lock in locks if age(lock) > older_than)


def remove_stale_locks(gitdir: Path, older_than: float = refs.STALE_LOCK_SECONDS) -> int:
    """Remove the stale ref lock files (stale_locks); how many."""
    removed = 0
    for lock in stale_locks(gitdir, older_than):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def running(gitdir: Path, presence: Presence, expiry: float) -> Iterator[None]:
    """Hold the gc lock for one run, so that two gc's (of any processes) never repack at
    once, where each would make the other fail; NotAlone for an expiry shorter than
    ALONE_EXPIRY_SECONDS while another process has the registry open."""
    with open(gitdir / GC_LOCK, "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if expiry < ALONE_EXPIRY_SECONDS and not presence.alone():
            raise NotAlone(
                message=f"another process has {gitdir} open (a server?): an expiry under "
                f"{ALONE_EXPIRY_SECONDS:.0f} s is safe only without it; the server's own gc "
                "(--gc-expiry) is safe at any expiry"
            )
        yield


def collect(
    gitdir: Path,
    git_refs: DiskRefsContainer,
    store: DiskObjectStore,
    gate: WriteGate,
    expiry: float = EXPIRY_SECONDS,
    step: Step | None = None,
) -> GcReport:
    """One gc run (module docstring), inside `running`; what it did."""
    step = step or (lambda _: None)
    started = time.monotonic()
    report = GcReport(before=usage(gitdir))
    step("locks")
    report.locks = remove_stale_locks(gitdir)
    cutoff = gate.settled() - expiry - MTIME_SLACK_SECONDS
    step("uploads")
    _expire_spools(gitdir / "hroot" / "uploads", cutoff, report)
    _expire_tmp_files(gitdir / "objects", cutoff, report)
    step("refs")
    _expire_refs(gitdir, git_refs, store, cutoff, report)
    # git takes what is not newer than the expiry, in whole seconds of mtime: an object
    # or tmp file of the cutoff's own second (a write that began after it) must stay, so
    # the expiry is the second before it
    expire = f"@{int(cutoff) - 1}"
    step("repack")
    # as `git gc` does: unreachable packed objects older than the expiry are dropped with
    # their pack rather than written out loose first (a history cut of 9,000 commits of a
    # 10,000-tag repository took 300 s writing them out)
    _git_beside_git(gitdir, "repack", "-A", "-d", "-q", f"--unpack-unreachable={expire}")
    step("prune")
    _git_beside_git(gitdir, "prune", f"--expire={expire}")
    # as `git gc` does: a commit-graph that `git gc --auto` wrote may name pruned commits
    _git_beside_git(gitdir, "commit-graph", "write", "--reachable")
    report.after = usage(gitdir)
    report.seconds = time.monotonic() - started
    return report


def usage(gitdir: Path) -> Usage:
    """Objects by `git count-objects -v`; bytes of every file under objects/ and the spools."""
    counted = gitcli.count_objects(gitdir)
    total = 0
    for folder in (gitdir / "objects", gitdir / "hroot" / "uploads"):
        for root, _, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(root, name)).st_size
    return Usage(counted["count"] + counted["in-pack"], total)


def _expire_spools(root: Path, cutoff: float, report: GcReport) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        files = [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
        if max([_mtime(folder), *map(_mtime, files)]) >= cutoff:
            continue
        size = sum(_size(path) for path in files)
        with _unless_locked(folder / "data") as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)
                report.spools += 1
                report.spool_bytes += size


@contextlib.contextmanager
def _unless_locked(spool: Path) -> Iterator[bool]:
    """True while we hold the spool's lock (or it has none): no writer is in it."""
    try:
        file = open(spool, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        yield True
        return
    with file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _expire_tmp_files(objects_dir: Path, cutoff: float, report: GcReport) -> None:
    for tmp in objects_dir.glob("tmp_obj_*"):
        if _mtime(tmp) < cutoff:
            size = _size(tmp)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                report.tmp_files += 1
                report.tmp_bytes += size


def _expire_refs(
    gitdir: Path,
    git_refs: DiskRefsContainer,
    store: DiskObjectStore,
    cutoff: float,
    report: GcReport,
) -> None:
    """Delete staging and incoming refs unchanged since `cutoff` (compare-and-swap: a
    ref that moves meanwhile stays)."""
    for prefix in (names.STAGING_PREFIX, INCOMING_PREFIX.encode()):
        for rest, oid in git_refs.as_dict(prefix).items():
            ref = prefix + rest
            if ref_mtime(gitdir, ref) >= cutoff:
                continue
            staged = _staged_count(store, oid) if prefix == names.STAGING_PREFIX else 0
            if not refs.compare_and_swap(git_refs, ref, oid, None):
                continue
            if prefix == names.STAGING_PREFIX:
                report.staging_refs += 1
                report.staged_blobs += staged
            else:
                report.incoming_refs += 1


def _staged_count(store: DiskObjectStore, tree_id: bytes) -> int:
    """How many blobs a staging tree (`blobs/<alg>/<hex>`) holds."""
    root: Tree = store[tree_id]
    by_algorithm: Tree = store[root[b"blobs"][1]]
    return sum(len(store[sub]) for _, _, sub in by_algorithm.iteritems())


def ref_mtime(gitdir: Path, ref: bytes) -> float:
    """When `ref` last changed, at the latest: its loose file's mtime, or for a packed
    ref that of packed-refs (written after the ref's value)."""
    loose = gitdir / ref.decode()
    return _mtime(loose if loose.exists() else gitdir / "packed-refs")


def _git_beside_git(gitdir: Path, *args: str, attempts: int = 5) -> str:
    """`gitcli.run`, again after a pause if it fails: a `git gc` a person runs meanwhile
    replaces the packs that a repack is reading ("cannot open pack index") or holds
    the lock that a commit-graph write wants."""
    for pause in range(1, attempts):
        try:
            return gitcli.run(gitdir, *args)
        except GitFailed:
            time.sleep(pause)
    return gitcli.run(gitdir, *args)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()  # gone or just replaced: never older than anything


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def age(path: Path) -> float:
    """Seconds since `path` last changed; 0 for one that is gone."""
    return time.time() - _mtime(path)
