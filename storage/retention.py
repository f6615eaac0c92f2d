"""Retention: what `hroot gc` may drop of what was pushed, when asked to (docs/format.md §8).

Without retention nothing a user pushed ever leaves: an untagged manifest stays in
index.json, and every overwritten or deleted tag stays in history, which pins its
blobs. Two opt-in rules make those bytes reclaimable:

- **Untagged manifests** untagged for longer than an age are dropped from index.json
  in one commit per repository, with the blobs no remaining manifest references. A
  manifest stays while a tagged index lists it or its subject stays (signatures and
  SBOMs are untagged referrers). The blobs dropped from the layout are staged first
  (docs/format.md §5), so a push that counted on them meanwhile still finds them, and
  they leave with the staging ref after gc's expiry.
- **History** keeps only the last N commits or D days of each branch's first-parent
  history: older commits are cut off under an empty root commit that names the cut
  (`Earlier-History:`), and lineage parents are kept only while the base commit is
  still in a kept history. Every kept commit keeps its tree, author, time and message.
  This is how a deleted tag's bytes and a deleted base's history become reclaimable.

The rewrite is deterministic (the same history and rules give the same commits) and
idempotent: a history already cut at its marker root is not cut again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, Tree
from dulwich.refs import DiskRefsContainer

from storage import digests, layout, names
from storage.commits import Change, Writer
from storage.digests import Digest
from storage.index import Descriptor, Index
from storage.layout import ObjectCache
from storage.lineage import Edit
from storage.manifests import ParsedManifest
from storage.objects import ObjectBatch

DAY = 86_400.0
EARLIER = "Earlier-History"
# the first line of the empty root commit under a cut history
CUT_SUMMARY = "earlier history dropped by hroot gc"
# trailers whose digests a commit names: the age of an untagged manifest counts from the last
_NAMING = (b"Manifest-Digest: ", b"Previous-Digest: ")


@dataclass(frozen=True)
class Rules:
    """What retention drops; None: that rule is off."""

    untagged_days: float | None = None  # untagged manifests untagged for longer than this
    keep_commits: int | None = None  # of each branch's first-parent history, at least
    keep_days: float | None = None  # of each branch's first-parent history, at least

    @property
    def cuts_history(self) -> bool:
        return self.keep_commits is not None or self.keep_days is not None

    @property
    def any(self) -> bool:
        return self.untagged_days is not None or self.cuts_history


@dataclass
class Dropped:
    """What retention dropped, or with a dry run would drop, by repository."""

    manifests: dict[str, list[str]] = field(default_factory=dict)  # digests
    blobs: dict[str, int] = field(default_factory=dict)  # blobs no manifest references
    commits: dict[str, int] = field(default_factory=dict)  # first-parent commits cut off
    lineage: dict[str, int] = field(default_factory=dict)  # lineage parents dropped
    moved: list[str] = field(default_factory=list)  # left for the next run: pushed meanwhile

    def __bool__(self) -> bool:
        """Whether anything was (or would be) dropped."""
        return any((self.manifests, self.blobs, self.commits, self.lineage))

    def summary(self) -> str:
        return (
            f"{sum(map(len, self.manifests.values()))} untagged manifests, "
            f"{sum(self.blobs.values())} blobs, {sum(self.commits.values())} commits, "
            f"{sum(self.lineage.values())} lineage parents"
        )


# --- untagged manifests ------------------------------------------------------
def recently_named(objects: DiskObjectStore, tip: bytes | None, since: float) -> set[str]:
    """The digests that commits from `tip` back (first parents) made at or after `since`
    name: pushed, untagged by a tag deleted, or replaced under a tag (docs/format.md §4)."""
    named: set[str] = set()
    commit = tip
    while commit is not None:
        parsed = objects[commit]
        if parsed.commit_time < since:
            break
        for line in parsed.message.splitlines():
            for key in _NAMING:
                if line.startswith(key):
                    named.add(line[len(key) :].decode().strip())
        commit = parsed.parents[0] if parsed.parents else None
    return named


def untagged_to_drop(
    index: Index, parsed: Callable[[str], ParsedManifest | None], young: set[str]
) -> list[str]:
    """The untagged manifests of `index` to drop: neither in `young`, nor listed by a
    manifest that stays, nor referring to a subject that stays; sorted."""
    listed = {descriptor["digest"] for descriptor in index.manifests()}
    tagged = {index.find(tag)["digest"] for tag in index.tags()}  # type: ignore[index]
    stays = tagged | (young & listed)
    if any(parsed(digest) is None for digest in listed):
        return []  # a manifest hroot cannot read may list any of them
    while True:
        more = {
            digest
            for digest in listed - stays
            if (subject := parsed(digest).subject) is not None  # type: ignore[union-attr]
            and str(subject) in stays
        }
        for digest in stays:
            more |= {str(child.digest) for child in parsed(digest).children}  # type: ignore[union-attr]
        more = (more & listed) - stays
        if not more:
            return sorted(listed - stays)
        stays |= more


def needed_blobs(manifests: Iterator[tuple[Descriptor, ParsedManifest | None]]) -> set[str] | None:
    """Every blob digest the manifests need (their own, their configs, layers and the
    manifests an index lists); None if one cannot be read, so nothing may go."""
    needed: set[str] = set()
    for descriptor, manifest in manifests:
        if manifest is None:
            return None
        needed.add(descriptor["digest"])
        needed.update(str(reference.digest) for reference in manifest.blobs)
        needed.update(str(child.digest) for child in manifest.children)
    return needed


# --- history ---------------------------------------------------------------
def window(
    objects: DiskObjectStore, tip: bytes, rules: Rules, now: float
) -> tuple[list[bytes], int]:
    """The commits of `tip`'s first-parent history that `rules` keep, newest first
    (always the tip, and a root that marks an earlier cut), and how many they cut."""
    kept: list[bytes] = []
    commit: bytes | None = tip
    oldest_day = now - rules.keep_days * DAY if rules.keep_days is not None else None
    while commit is not None:
        parsed = objects[commit]
        keep = (
            not kept
            or (rules.keep_commits is not None and len(kept) < rules.keep_commits)
            or (oldest_day is not None and parsed.commit_time >= oldest_day)
            or _is_cut_root(parsed)
        )
        if not keep:
            return kept, _length(objects, commit)
        kept.append(commit)
        commit = parsed.parents[0] if parsed.parents else None
    return kept, 0


def _length(objects: DiskObjectStore, commit: bytes | None) -> int:
    """How many commits the first-parent history from `commit` holds."""
    count = 0
    while commit is not None:
        count += 1
        parents = objects[commit].parents
        commit = parents[0] if parents else None
    return count


def _is_cut_root(commit: Commit) -> bool:
    return not commit.parents and commit.message.startswith(CUT_SUMMARY.encode() + b"\n")


class Rewrite:
    """Writes the kept histories of every branch (window) on their new roots.

    Lineage parents are mapped to the rewritten base commits; one whose commit no kept
    history holds (its branch deleted, or cut there) is dropped. A commit whose parents
    stay as they were keeps its id, so a branch with nothing to drop keeps its tip. A
    commit that two branches share (a branch copied by hand) is cut only where no
    branch keeps its parent.
    """

    def __init__(self, objects: DiskObjectStore, batch: ObjectBatch) -> None:
        self._objects = objects
        self._batch = batch
        self._kept: dict[bytes, bytes] = {}  # commit -> the first branch that keeps it
        self._new: dict[bytes, bytes] = {}  # old commit -> rewritten
        self.lineage_dropped: dict[bytes, int] = {}  # by branch

    def keep(self, ref: bytes, commits: list[bytes]) -> None:
        """Keep `commits` (a window of branch `ref`); the parent of the oldest is cut."""
        for commit in commits:
            self._kept.setdefault(commit, ref)

    def tip(self, commit: bytes) -> bytes:
        """The rewritten `commit` (a kept one), its kept ancestors first."""
        stack = [commit]
        while stack:
            old = stack[-1]
            if old in self._new:
                stack.pop()
                continue
            parsed = self._objects[old]
            waiting = [parent for parent in self._parents(parsed) if parent not in self._new]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            self._new[old] = self._write(old, parsed)
        return self._new[commit]

    def _parents(self, parsed: Commit) -> list[bytes]:
        """The parents of a kept commit that stay (before rewriting)."""
        return [parent for parent in parsed.parents if parent in self._kept]

    def _write(self, old: bytes, parsed: Commit) -> bytes:
        ref = self._kept[old]
        first, *lineage = parsed.parents or [None]
        parents = [self._new[parent] for parent in lineage if parent in self._kept]
        if len(parents) < len(lineage):
            self.lineage_dropped[ref] = (
                self.lineage_dropped.get(ref, 0) + len(lineage) - len(parents)
            )
        if first in self._kept:
            parents.insert(0, self._new[first])
        elif first is not None:  # cut off here
            parents.insert(0, self._cut_root(first))
        if parents == parsed.parents:
            return old
        rewritten = Commit.from_string(parsed.as_raw_string())
        rewritten.parents = parents
        return self._batch.write(b"commit", rewritten.as_raw_string())

    def _cut_root(self, cut: bytes) -> bytes:
        """The empty root that stands for history up to `cut` (its time, for determinism)."""
        earlier = self._objects[cut]
        root = Commit()
        root.tree = self._batch.write(b"tree", Tree().as_raw_string())
        root.parents = []
        root.author = root.committer = earlier.committer
        root.author_time = root.commit_time = earlier.commit_time
        root.author_timezone = root.commit_timezone = 0
        root.message = f"{CUT_SUMMARY}\n\n{EARLIER}: {cut.decode()}\n".encode()
        return self._batch.write(b"commit", root.as_raw_string())


# --- applying the rules to a store -------------------------------------------
@dataclass(frozen=True)
class Parts:
    """What retention needs of the store (storage.store builds it)."""

    objects: DiskObjectStore
    refs: DiskRefsContainer
    cache: ObjectCache
    writer: Writer
    tip: Callable[[str], tuple[bytes | None, bytes | None]]  # a repository's tip and tree
    parsed: Callable[[bytes], ParsedManifest | None]  # a stored manifest, by git id
    repositories: Callable[[], list[str]]


def apply(parts: Parts, rules: Rules, expiry: float, dry_run: bool) -> Dropped:
    """Drop untagged manifests, then cut histories, as `rules` say; with `dry_run`, only
    say what would go. Nothing younger than `expiry` is taken for untagged: a push of an
    index names its images only after pushing them."""
    dropped = Dropped()
    now = time.time()
    if rules.untagged_days is not None:
        since = now - max(rules.untagged_days * DAY, expiry)
        for repo in parts.repositories():
            _drop_untagged(parts, repo, since, dry_run, dropped)
    if rules.cuts_history:
        _cut_histories(parts, rules, now, dry_run, dropped)
    return dropped


def _drop_untagged(parts: Parts, repo: str, since: float, dry_run: bool, dropped: Dropped) -> None:
    """One commit that drops repo's untagged manifests not named since `since`, and
    takes the blobs no manifest left needs out of its layout (onto its staging tree
    first, so that a push counting on one meanwhile still finds it)."""
    tip, tree = parts.tip(repo)
    young = recently_named(parts.objects, tip, since)
    listed = {d["digest"] for d in layout.read_index(parts.cache, tree).manifests()}
    drop, unneeded = _untagged(parts, tree, young)
    if not drop and not unneeded:
        return
    if dry_run:
        dropped.manifests[repo], dropped.blobs[repo] = drop, len(unneeded)
        return
    parts.writer.update_staging(repo, unneeded, set())
    outcome: list[tuple[list[str], int]] = []  # of the last attempt: manifests, blobs

    def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> Change | None:
        index = layout.read_index(parts.cache, tree)
        new = {d["digest"] for d in index.manifests()} - listed  # pushed meanwhile
        drop, now_unneeded = _untagged(parts, tree, young | new)
        remove = [digest for digest in now_unneeded if digest in unneeded]
        outcome[:] = [(drop, len(remove))]
        if not drop and not remove:
            return None
        return Change(
            layout.TreeWriter(batch, parts.cache).layout(
                tree, index.without_manifests(set(drop)), remove=remove
            ),
            f"drop untagged manifests of {repo}",
            [("Manifest-Digest", digest) for digest in drop],
            edits=[Edit(digest, None) for digest in drop],
        )

    parts.writer.commit(repo, change, must_exist=True)
    if outcome and (outcome[0][0] or outcome[0][1]):
        dropped.manifests[repo], dropped.blobs[repo] = outcome[0]


def _untagged(
    parts: Parts, tree: bytes | None, young: set[str]
) -> tuple[list[str], dict[Digest, bytes]]:
    """The untagged manifests of a layout that retention drops (none in `young`), and
    the blobs that no manifest left then needs."""
    index = layout.read_index(parts.cache, tree)

    @functools.cache  # each manifest is asked for several times
    def parsed(digest: str) -> ParsedManifest | None:
        oid = layout.find_blob(parts.cache, tree, digests.parse(digest))
        return parts.parsed(oid) if oid is not None else None

    drop = untagged_to_drop(index, parsed, young)
    left = ((d, parsed(d["digest"])) for d in index.manifests() if d["digest"] not in drop)
    needed = needed_blobs(left)
    if needed is None:
        return drop, {}
    stored = layout.blobs(parts.cache, tree)
    return drop, {digest: oid for digest, oid in stored.items() if str(digest) not in needed}


def _cut_histories(parts: Parts, rules: Rules, now: float, dry_run: bool, dropped: Dropped) -> None:
    """Rewrite every branch's history to what `rules` keep (Rewrite), and move each
    branch that changed, unless a push moved it meanwhile."""
    tips = {
        names.BRANCH_PREFIX + key: tip
        for key, tip in parts.refs.as_dict(names.BRANCH_PREFIX).items()
    }
    with ObjectBatch(parts.objects) as batch:
        rewrite = Rewrite(parts.objects, batch)
        for ref, tip in tips.items():
            kept, cut = window(parts.objects, tip, rules, now)
            rewrite.keep(ref, kept)
            if cut:
                dropped.commits[names.repository(ref)] = cut
        moves = {ref: (tip, rewrite.tip(tip)) for ref, tip in tips.items()}
        for ref, count in rewrite.lineage_dropped.items():
            dropped.lineage[names.repository(ref)] = count
        if dry_run:
            return
        batch.install()
    for ref, (old, new) in moves.items():
        if new != old and not parts.writer.move(ref, old, new):
            dropped.moved.append(names.repository(ref))
