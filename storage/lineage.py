"""Lineage: which image a pushed one was built on (docs/format.md §4), without a search.

A base image is one whose layers are all the first layers of the pushed image. Reading
every repository's manifests on each push cost 72 ms at 2,000 repositories; instead an
index in memory maps a key of each stored image's whole layer list to the branches and
manifests that have it, and a push looks up the keys of its own layer prefixes, longest
first, touching only the images that match.

Git stays the source of truth (docs/format.md §7): nothing is written beside it, and the index is
checked against the refs, not trusted. Each candidate is confirmed against its branch's
current tip before use (a branch that moved is read again, a deleted one dropped), and
every lookup first re-reads the branches that changed since the last one, as inotify
tells them (storage.refwatch), or all of them where it cannot tell. The store's own
commits update the index directly, since it knows what they did.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.refs import DiskRefsContainer

from storage import names, refs
from storage.digests import Digest
from storage.index import Descriptor
from storage.manifests import ParsedManifest
from storage.refwatch import RefWatch

# Manifests of one branch read between two pauses of `prepare`.
_BETWEEN_PAUSES = 256
# A base pushed more than this many commits ago is named by its branch's tip instead.
_SEARCH_DEPTH = 1000
# The platform of an index entry that names none (as buildx marks its attestations).
UNKNOWN_PLATFORM = "unknown/unknown"

Image = tuple[str | None, list[Digest]]  # (platform of an index's entry, or None; layers)
TreeOf = Callable[[bytes], bytes]  # a commit's tree
ManifestsIn = Callable[[bytes], Iterable[tuple[Descriptor, ParsedManifest]]]  # of a layout


@dataclass(frozen=True)
class Base:
    """The image a pushed one (or one platform's image of it) was built on."""

    name: str  # repo@digest
    commit: bytes  # the commit that pushed it: a parent of the new commit
    platform: str | None = None  # os/arch[/variant] within an image index

    def trailer(self) -> tuple[str, str]:
        """`Base-Image: repo@digest`, with ` (os/arch)` for a platform of an index."""
        return (
            "Base-Image",
            self.name if self.platform is None else f"{self.name} ({self.platform})",
        )


@dataclass(frozen=True)
class Edit:
    """What one of the store's own commits did to its branch's images."""

    digest: str
    layers: list[Digest] | None  # the manifest pushed, or None: it was removed


def no_pause() -> None:
    """The `pause` of work nobody waits beside (the commands, the tests)."""


def pushed_by(objects: DiskObjectStore, tip: bytes, digest: str, depth: int) -> bytes | None:
    """The newest commit from `tip` back, first parents only (at most `depth` of them),
    whose message pushed `digest` (docs/format.md §4); None if none did. A bounded search
    a push can afford; a whole branch's pushes are storage.pushes' index."""
    trailer = f"\nManifest-Digest: {digest}\n".encode()
    commit: bytes | None = tip
    for _ in range(depth):
        if commit is None:
            break
        parsed = objects[commit]
        if parsed.message.startswith(b"push ") and trailer in parsed.message:
            return commit
        commit = parsed.parents[0] if parsed.parents else None
    return None


def parents(bases: list[Base]) -> list[bytes]:
    """Each distinct base commit once, in the order of the bases."""
    return list(dict.fromkeys(base.commit for base in bases))


def chain_keys(layers: list[Digest]) -> list[bytes]:
    """A key for each prefix of `layers`: the k-th names the first k layers."""
    running = hashlib.sha256()
    keys = []
    for layer in layers:
        running.update(f"{layer}\n".encode())
        keys.append(running.digest())
    return keys


@dataclass
class _Branch:
    """What the index knows of one branch: its images as of `tip`."""

    tip: bytes | None
    chains: dict[str, bytes] = field(default_factory=dict)  # manifest digest -> its chain key
    pushed: dict[str, bytes] = field(default_factory=dict)  # manifest digest -> its push commit


class Lineage:
    """The index of every image's layer chain, kept true to the refs. Thread-safe."""

    def __init__(
        self,
        gitdir: Path,
        git_refs: DiskRefsContainer,
        objects: DiskObjectStore,
        tree_of: TreeOf,
        manifests_in: ManifestsIn,
    ) -> None:
        self._gitdir = gitdir
        self._refs = git_refs
        self._objects = objects
        self._tree_of = tree_of
        self._manifests_in = manifests_in
        self._lock = threading.Lock()
        self._watch: RefWatch | None = None  # None until the first lookup builds the index
        self._branches: dict[bytes, _Branch] = {}
        self._chains: dict[bytes, dict[bytes, set[str]]] = {}  # key -> {branch ref: digests}
        self._unsure: set[bytes] = set()  # branches to read again before the next lookup

    def bases(self, ref: bytes, images: list[Image]) -> list[Base]:
        """The base of each image pushed to branch `ref` that has one, in their order."""
        if all(len(layers) < 2 for _, layers in images):
            return []  # only a proper prefix of at least one layer can be a base
        with self._lock:
            self._refresh()
            found = (self._base(ref, platform, layers) for platform, layers in images)
            return [base for base in found if base is not None]

    def prepare(self, pause: Callable[[], None] = no_pause) -> None:
        """Build the index now, instead of in the first push that needs it (2 s at
        2,000 repositories), calling `pause` between branches and every few hundred
        manifests."""
        with self._lock:
            self._refresh(pause)

    def committed(
        self, ref: bytes, old: bytes | None, new: bytes, edits: list[tuple[bytes, Edit]]
    ) -> None:
        """The store moved `ref` from `old` to `new` with these (commit, edit)s, in order."""
        with self._lock:
            if self._watch is None:
                return  # no index yet: its first lookup reads everything
            branch = self._branches.get(ref)
            if branch is not None and branch.tip == new:  # already read again at `new`
                self._remember_pushes(branch, edits)
                return
            if (branch.tip if branch is not None else None) != old:
                self._unsure.add(ref)  # moved meanwhile by someone else, or never read
                return
            if branch is None:  # the branch's first commit
                branch = self._branches[ref] = _Branch(None)
            for commit, edit in edits:
                self._forget(ref, branch, edit.digest)
                if edit.layers:
                    self._add(ref, branch, edit.digest, edit.layers)
                    branch.pushed[edit.digest] = commit
            branch.tip = new

    def rewritten(self, ref: bytes) -> None:
        """`ref` was moved to rewritten commits: what the index knows of it is stale."""
        with self._lock:
            self._unsure.add(ref)

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()

    # --- finding a base ---------------------------------------------------
    def _base(self, ref: bytes, platform: str | None, layers: list[Digest]) -> Base | None:
        """The image whose layers are the longest proper prefix of `layers`.

        When that prefix is an image of `ref` itself and of no other branch, there is
        no base: its push is in the branch's first-parent history already, and a merge
        of an ancestor would only clutter `git log --graph`.
        """
        for key in reversed(chain_keys(layers)[:-1]):
            while holders := self._chains.get(key):
                others = [holder for holder in holders if holder != ref]
                chosen = min(others) if others else ref
                if not self._current(chosen):
                    continue  # read again or dropped: look at this prefix anew
                if chosen == ref:
                    return None
                digest = min(holders[chosen])
                name = names.repository(chosen)
                return Base(f"{name}@{digest}", self._pushed_by(chosen, digest), platform)
        return None

    def _current(self, ref: bytes) -> bool:
        """Whether the index holds `ref` as it is now; if not, read it again (or drop it)."""
        tip = refs.read(self._refs, ref)
        if tip is not None and tip == self._branches[ref].tip:
            return True
        self._read_branch(ref, tip)
        return False

    def _pushed_by(self, ref: bytes, digest: str) -> bytes:
        """The newest commit from the tip back (first parents) that pushed `digest`."""
        branch = self._branches[ref]
        if digest not in branch.pushed:
            assert branch.tip is not None  # the branch is current: it has a tip
            found = pushed_by(self._objects, branch.tip, digest, _SEARCH_DEPTH)
            branch.pushed[digest] = found if found is not None else branch.tip
        return branch.pushed[digest]

    # --- keeping the index true to the refs ---------------------------------
    def _refresh(self, pause: Callable[[], None] = no_pause) -> None:
        """Read again every branch that may have changed since the last lookup."""
        if self._watch is None:
            self._watch = RefWatch(self._gitdir, names.BRANCH_PREFIX.decode().rstrip("/"))
        changed = self._watch.changed()
        if changed is None:
            tips = {
                names.BRANCH_PREFIX + name: tip
                for name, tip in self._refs.as_dict(names.BRANCH_PREFIX).items()
            }
            for ref in set(self._branches) - set(tips):
                self._read_branch(ref, None)
        else:
            refs_changed = {names.BRANCH_PREFIX + name for name in changed} | self._unsure
            tips = {ref: refs.read(self._refs, ref) for ref in refs_changed}
        self._unsure.clear()
        for ref, tip in tips.items():
            branch = self._branches.get(ref)
            if tip != (branch.tip if branch is not None else None):
                pause()
                self._read_branch(ref, tip, pause)

    def _read_branch(
        self, ref: bytes, tip: bytes | None, pause: Callable[[], None] = no_pause
    ) -> None:
        """Index the images of `ref` at `tip` afresh (None: the branch is gone)."""
        old = self._branches.pop(ref, None)
        if old is not None:
            for digest, key in old.chains.items():
                self._unlink(ref, digest, key)
        if tip is None:
            return
        branch = self._branches[ref] = _Branch(tip)
        for number, (descriptor, manifest) in enumerate(self._manifests_in(self._tree_of(tip))):
            if number % _BETWEEN_PAUSES == _BETWEEN_PAUSES - 1:
                pause()
            if manifest.layers:
                self._add(ref, branch, descriptor["digest"], manifest.layers)

    def _add(self, ref: bytes, branch: _Branch, digest: str, layers: list[Digest]) -> None:
        key = chain_keys(layers)[-1]
        branch.chains[digest] = key
        self._chains.setdefault(key, {}).setdefault(ref, set()).add(digest)

    def _forget(self, ref: bytes, branch: _Branch, digest: str) -> None:
        key = branch.chains.pop(digest, None)
        branch.pushed.pop(digest, None)
        if key is not None:
            self._unlink(ref, digest, key)

    def _unlink(self, ref: bytes, digest: str, key: bytes) -> None:
        holders = self._chains[key]
        holders[ref].discard(digest)
        if not holders[ref]:
            del holders[ref]
        if not holders:
            del self._chains[key]

    @staticmethod
    def _remember_pushes(branch: _Branch, edits: list[tuple[bytes, Edit]]) -> None:
        for commit, edit in edits:
            if edit.layers and edit.digest in branch.chains:
                branch.pushed[edit.digest] = commit
