"""The per-ref write queue and the commit engine behind every change of the store.

Every change of a branch is a commit (docs/format.md §4), every blob staged or taken
in a new tree on its staging ref (§5). Updates of one ref that queue while another
is written are written together after it, and every ref move is a compare-and-swap
that rebuilds on the new tip when another writer (a thread or a process) got there
first, so concurrent writers never lose each other's work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit
from dulwich.refs import DiskRefsContainer

from storage import names, refs
from storage.digests import Digest
from storage.errors import NameUnknown, StoreError
from storage.index import Index
from storage.layout import ObjectCache, TreeWriter
from storage.lineage import Edit, Lineage
from storage.maintenance import Maintenance
from storage.objects import ObjectBatch
from storage.types import Committed

AUTHOR = b"hroot <hroot@localhost>"
_MERGED_DEPTH = 100  # commits back in which a base merged already is not merged again

Tip = Callable[[str], tuple[bytes | None, bytes | None]]  # a repository's tip and its tree


@dataclass
class Queued:
    """An update waiting for its ref's writer; `done` once written (or failed)."""

    done: bool = field(default=False, init=False)
    error: BaseException | None = field(default=None, init=False)


Q = TypeVar("Q", bound=Queued)


@dataclass
class StagingEdit(Queued):
    """Blobs to add to and remove from a staging tree."""

    add: dict[Digest, bytes]
    remove: set[Digest]


@dataclass
class Change:
    """What one attempt at a branch update wants: a new tree and the words for it."""

    tree: bytes
    summary: str
    trailers: list[tuple[str, str]] = field(default_factory=list)
    lineage: list[bytes] = field(default_factory=list)  # further parents: base image pushes
    edits: list[Edit] = field(default_factory=list)  # manifests pushed or removed, for lineage


# what a branch update does on the tip (and its tree), writing its objects into the batch
ChangeFunction = Callable[[bytes | None, bytes | None, ObjectBatch], Change | None]


@dataclass
class QueuedChange(Queued):
    """A change for a branch; `must_exist`: NameUnknown if the branch has no commit."""

    change: ChangeFunction
    must_exist: bool


class Writer:
    """Writes every change of one repository's refs. Thread-safe."""

    def __init__(
        self,
        objects: DiskObjectStore,
        git_refs: DiskRefsContainer,
        cache: ObjectCache,
        tip: Tip,
        lineage: Lineage,
        maintenance: Maintenance,
    ) -> None:
        self._objects = objects
        self._refs = git_refs
        self._cache = cache
        self._tip = tip
        self._lineage = lineage
        self._maintenance = maintenance
        self._ref_locks: dict[bytes, threading.Lock] = {}
        self._ref_locks_lock = threading.Lock()
        self._queues: dict[bytes, list[Queued]] = {}  # by ref: updates waiting
        self.listeners: list[Callable[[Committed], None]] = []  # Store.on_commit

    def commit(self, repo: str, change: ChangeFunction, must_exist: bool = False) -> None:
        """Apply `change` to the tip as one commit; rebuild on the new tip if we lose a race.

        Changes to one branch that arrive while another is being written are written
        together after it: each is still a commit of its own, chained in the order
        they came, but their objects are synced once and the branch moves once.
        """
        ref = names.branch_ref(repo)
        self._queue(
            ref,
            QueuedChange(change, must_exist),
            lambda queued: self._commit_all(repo, ref, queued),
        )

    def _commit_all(self, repo: str, ref: bytes, queued: list[QueuedChange]) -> None:
        while True:
            tip, tree = self._tip(repo)
            head, head_tree = tip, tree
            written: list[tuple[bytes, Change]] = []  # (commit, its change), in order
            with ObjectBatch(self._objects) as batch:
                for item in queued:
                    item.error = None
                    try:
                        done = self._write_change(repo, item, head, head_tree, batch)
                    except StoreError as error:
                        item.error = error
                        continue
                    if done is not None:
                        written.append(done)
                        head, head_tree = done[0], done[1].tree
                if head is None or head == tip:
                    return
                batch.install()
            if refs.compare_and_swap(self._refs, ref, tip, head):
                self._maintenance.committed(len(written), batch.size)
                edits = [(commit, edit) for commit, change in written for edit in change.edits]
                self._lineage.committed(ref, tip, head, edits)
                self._tell(repo, written)
                return

    def _tell(self, repo: str, written: list[tuple[bytes, Change]]) -> None:
        """Tell the listeners of each commit now on the branch, in order."""
        for commit, change in written:
            told = Committed(repo, commit.decode(), change.summary, tuple(change.trailers))
            for listener in self.listeners:
                listener(told)

    def _write_change(
        self,
        repo: str,
        item: QueuedChange,
        tip: bytes | None,
        tree: bytes | None,
        batch: ObjectBatch,
    ) -> tuple[bytes, Change] | None:
        """The commit of item's change on `tip`, and the change; None if it changes nothing."""
        if item.must_exist and tip is None:
            raise NameUnknown(repo)
        wanted = item.change(tip, tree, batch)
        if wanted is None or wanted.tree == tree:
            return None
        parents = [tip] if tip is not None else []
        merged = self._merged_bases(tip)
        bases = [base for base in wanted.lineage if base not in merged]
        if bases:
            if not parents:  # a base's parent comes second: first, the empty repository
                empty = TreeWriter(batch, self._cache).layout(None, Index.empty())
                parents = [self._write_commit(batch, empty, [], f"create {repo}", [])]
            parents += bases
        commit = self._write_commit(batch, wanted.tree, parents, wanted.summary, wanted.trailers)
        # the next change of this batch builds on a commit that is not on disk yet
        self._cache.put("merged-bases", commit, merged | frozenset(bases), len(merged) + 1)
        return commit, wanted

    def _merged_bases(self, commit: bytes | None, depth: int = _MERGED_DEPTH) -> frozenset[bytes]:
        """The base commits already merged into the last `depth` commits of `commit`'s
        first-parent history (docs/format.md §4): a push on such a base, a tag pushed
        again or the next build on an unchanged base, merges it no second time, which
        would only repeat the same edge in `git log --graph`."""
        if commit is None or depth == 0:
            return frozenset()

        def load() -> frozenset[bytes]:
            parsed = self._objects[commit]
            first = parsed.parents[0] if parsed.parents else None
            return self._merged_bases(first, depth - 1) | frozenset(parsed.parents[1:])

        return self._cache.get("merged-bases", commit, load, lambda found: len(found) + 1)

    def _write_commit(
        self,
        batch: ObjectBatch,
        tree: bytes,
        parents: list[bytes],
        summary: str,
        trailers: list[tuple[str, str]],
    ) -> bytes:
        commit = Commit()
        commit.tree = tree
        commit.parents = parents
        commit.author = commit.committer = AUTHOR
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message(summary, trailers)
        return batch.write(b"commit", commit.as_raw_string())

    def move(self, ref: bytes, old: bytes, new: bytes) -> bool:
        """Move branch `ref` from `old` to `new`, a rewrite of its history (storage.retention);
        False if it moved meanwhile. Pushes of this process wait meanwhile."""
        with self._writing(ref):
            if not refs.compare_and_swap(self._refs, ref, old, new):
                return False
        self._lineage.rewritten(ref)
        return True

    def update_staging(self, repo: str, add: dict[Digest, bytes], remove: set[Digest]) -> None:
        """Add and remove blobs of repo's staging tree, with every other edit queued meanwhile.

        Eight clients uploading into one repository would otherwise take turns
        writing the staging tree once each; whoever holds the ref writes for all.
        """
        ref = names.staging_ref(repo)
        edit = StagingEdit(add, remove)
        self._queue(ref, edit, lambda edits: self._apply_staging(ref, edits))

    def _apply_staging(self, ref: bytes, edits: list[StagingEdit]) -> None:
        add: dict[Digest, bytes] = {}
        remove: set[Digest] = set()
        for edit in edits:  # in order: a later edit wins over an earlier one
            for digest in edit.remove:
                add.pop(digest, None)
                remove.add(digest)
            for digest, oid in edit.add.items():
                remove.discard(digest)
                add[digest] = oid
        while True:
            staged = refs.read(self._refs, ref)
            with ObjectBatch(self._objects) as batch:
                new = TreeWriter(batch, self._cache).staging(staged, add, remove)
                if new == staged:
                    return
                batch.install()
            if refs.compare_and_swap(self._refs, ref, staged, new):
                return

    def _queue(self, ref: bytes, item: Q, write: Callable[[list[Q]], None]) -> None:
        """Queue an update of `ref`; whoever next holds the ref's writer lock writes
        everything queued by then, with `write`. Raises the update's own error."""
        with self._ref_locks_lock:
            self._queues.setdefault(ref, []).append(item)
        with self._writing(ref):
            if not item.done:
                with self._ref_locks_lock:  # one ref's queue holds one kind of update
                    queued = cast(list[Q], self._queues.pop(ref, []))
                try:
                    write(queued)
                except BaseException as error:  # nothing was written: it is everyone's
                    for other in queued:
                        other.error = error
                finally:
                    for other in queued:
                        other.done = True
        if item.error is not None:
            raise item.error

    def _writing(self, ref: bytes) -> threading.Lock:
        """One writer per ref in this process: threads that raced would each rebuild the
        whole tree (10,000 entries for a big repository) only for all but one to retry.
        Other processes are still kept apart by the compare-and-swap alone."""
        with self._ref_locks_lock:
            return self._ref_locks.setdefault(ref, threading.Lock())


def message(summary: str, trailers: list[tuple[str, str]]) -> bytes:
    lines = [summary, ""] + [f"{key}: {value}" for key, value in trailers]
    return ("\n".join(lines) + "\n").encode()
