"""The git-backed image store: one registry in one bare git repository (docs/format.md).

Each repository `name` is the branch `hroot/<name>`, whose commits' trees are OCI
image layouts; uploaded blobs wait on `refs/hroot/staging/<name>` until a manifest
takes them in. Every change is a compare-and-swap of a ref that retries on a new
tip, so concurrent writers (threads or processes) never lose each other's work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from dulwich.objects import Commit
from dulwich.repo import Repo

from storage import (
    digests,
    history,
    layout,
    lineage,
    manifests,
    names,
    objects,
    refs,
    repository,
)
from storage.digests import Digest
from storage.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestUnknown,
    NameUnknown,
    StoreError,
)
from storage.index import Descriptor, Index
from storage.layout import ObjectCache, TreeWriter
from storage.maintenance import Maintenance
from storage.manifests import ParsedManifest
from storage.objects import ObjectBatch
from storage.types import BlobInfo, BlobReader, Manifest, UploadWriter
from storage.uploads import Uploads

__all__ = ["BlobInfo", "BlobReader", "Manifest", "Store", "UploadWriter"]

GC_EVERY = 500  # commits between two `git gc --auto` (storage.maintenance)
_MERGED_DEPTH = 100  # commits back in which a base merged already is not merged again
AUTHOR = b"hroot <hroot@localhost>"


@dataclass
class _Queued:
    """An update waiting for its ref's writer; `done` once written (or failed)."""

    done: bool = field(default=False, init=False)
    error: BaseException | None = field(default=None, init=False)


Q = TypeVar("Q", bound=_Queued)


@dataclass
class _StagingEdit(_Queued):
    """Blobs to add to and remove from a staging tree."""

    add: dict[Digest, bytes]
    remove: set[Digest]


@dataclass
class _Change:
    """What one attempt at a branch update wants: a new tree and the words for it."""

    tree: bytes
    summary: str
    trailers: list[tuple[str, str]] = field(default_factory=list)
    lineage: list[bytes] = field(default_factory=list)  # further parents: base image pushes
    edit: lineage.Edit | None = None  # the manifest it pushes or removes, for the lineage index


# what a branch update does on the tip (and its tree), writing its objects into the batch
_ChangeFunction = Callable[[bytes | None, bytes | None, ObjectBatch], _Change | None]


@dataclass
class _QueuedChange(_Queued):
    """A change for a branch; `must_exist`: NameUnknown if the branch has no commit."""

    change: _ChangeFunction
    must_exist: bool


class Store:
    """One registry in one bare git repository. Every method is blocking and thread-safe."""

    def __init__(self, repo: Repo, gc_every: int = GC_EVERY) -> None:
        self._repo = repo
        self.path = Path(repo.controldir())
        self._objects = repo.object_store
        # dulwich takes core.bigFileThreshold (8 MiB here, for `git gc`) as the largest
        # loose object it will read; index.json and trees of big repositories are larger.
        self._objects.loose_object_size_limit = 1 << 40
        self._refs = repo.refs
        refs.guard_packed_refs(self._refs)
        self._cache = ObjectCache(self._objects)
        self._ref_locks: dict[bytes, threading.Lock] = {}
        self._ref_locks_lock = threading.Lock()
        self._queues: dict[bytes, list[_Queued]] = {}  # by ref: updates waiting
        self._uploads = Uploads(self.path / "hroot" / "uploads", self.path / "objects")
        self._maintenance = Maintenance(self.path, gc_every)
        self._lineage = lineage.Lineage(
            self.path, self._refs, self._objects, self._tree_of, self._stored_manifests
        )

    @classmethod
    def open(cls, path: str | Path, create: bool = True, gc_every: int = GC_EVERY) -> Store:
        """Open the registry at `path` (a bare git repository): create it if asked, adopt
        or upgrade it (storage.repository); RepositoryRefused for a path not hroot's.

        Every `gc_every` commits `git gc --auto` is started in the background (0: never).
        """
        return cls(repository.open_repo(Path(path), create), gc_every)

    def prepare_lineage(self) -> None:
        """Read every repository's images into the lineage index (storage.lineage), so
        that no push waits for it; a server calls this in the background at start."""
        self._lineage.prepare()

    def close(self) -> None:
        self._lineage.close()
        self._repo.close()

    # --- listings ---------------------------------------------------------
    def repositories(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Repository names, sorted; at most n after `last`."""
        found = sorted(names.decode(key) for key in self._refs.keys(base=names.BRANCH_PREFIX))
        return _page(found, n, last)

    def tags(self, repo: str, n: int | None = None, last: str | None = None) -> list[str]:
        """Tags of repo, sorted; at most n after `last`. NameUnknown if repo has no branch."""
        _, tree = self._tip(repo, must_exist=True)
        return _page(layout.read_index(self._cache, tree).tags(), n, last)

    # --- blobs ------------------------------------------------------------
    def stat_blob(self, repo: str, digest: str) -> BlobInfo:
        parsed = digests.parse(digest)
        return BlobInfo(str(parsed), self._size(self._need_blob(repo, parsed)))

    def open_blob(self, repo: str, digest: str) -> BlobReader:
        """The blob, to stream (its `size` known at once, so one lookup serves a Range)."""
        oid = self._need_blob(repo, digests.parse(digest))
        return objects.open_blob(self._objects, oid.decode())

    def put_blob(
        self, repo: str, digest: str, stream: BinaryIO, size: int | None = None
    ) -> BlobInfo:
        """Write a whole blob from a file-like object and stage it.

        With `size` known this is one pass straight into a git object; without,
        the bytes are spooled as an upload first.
        """
        parsed = digests.parse(digest)
        if size is None:
            upload_id = self.start_upload(repo)
            with self.open_upload(repo, upload_id) as writer:
                while chunk := stream.read(objects.CHUNK):
                    writer.write(chunk)
            return self.finish_upload(repo, upload_id, digest)
        names.check_name(repo)
        oid = objects.write_blob(self.path / "objects", stream.read, size, parsed).encode()
        self._stage(repo, {parsed: oid})
        return BlobInfo(str(parsed), size)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> BlobInfo | None:
        """Link from_repo's blob into repo (the same git object); None if it has none."""
        parsed = digests.parse(digest)
        names.check_name(repo)
        oid = self._find_blob(from_repo, parsed)
        if oid is None:
            return None
        self._stage(repo, {parsed: oid})
        return BlobInfo(str(parsed), self._size(oid))

    def delete_blob(self, repo: str, digest: str) -> None:
        """Remove the blob from repo's staging and from its layout (one commit)."""
        parsed = digests.parse(digest)
        self._need_blob(repo, parsed)
        self._unstage(repo, {parsed})

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> _Change | None:
            if layout.find_blob(self._cache, tree, parsed) is None:
                return None
            index = layout.read_index(self._cache, tree)
            return _Change(
                self._trees(batch).layout(tree, index, remove=[parsed]),
                f"delete blob {repo}@{parsed}",
                [("Blob-Digest", str(parsed))],
                edit=lineage.Edit(str(parsed), None),  # a manifest without its blob is no base
            )

        self._commit(repo, change)

    # --- uploads ----------------------------------------------------------
    def start_upload(self, repo: str) -> str:
        return self._uploads.start(names.check_name(repo))

    def upload_size(self, repo: str, upload_id: str) -> int:
        return self._uploads.size(repo, upload_id)

    def open_upload(
        self, repo: str, upload_id: str, offset: int | None = None, length: int | None = None
    ) -> UploadWriter:
        """Open for appending; UploadOutOfOrder if `offset` is given and is not the end.

        `length`, the bytes this write brings if known, lets a first write that turns
        out to be the whole blob finish without reading it again.
        """
        return self._uploads.open(repo, upload_id, offset, length)

    def finish_upload(self, repo: str, upload_id: str, digest: str) -> BlobInfo:
        """Check the digest, make the upload a git object and stage it."""
        parsed = digests.parse(digest)
        oid, size = self._uploads.finish(repo, upload_id, parsed)
        self._stage(repo, {parsed: oid})
        return BlobInfo(str(parsed), size)

    def cancel_upload(self, repo: str, upload_id: str) -> None:
        self._uploads.cancel(repo, upload_id)

    # --- manifests --------------------------------------------------------
    def put_manifest(
        self,
        repo: str,
        reference: str,
        body: bytes,
        media_type: str | None = None,
        max_size: int = manifests.MAX_MANIFEST_SIZE,
    ) -> Manifest:
        """Put a manifest by digest or under a tag: one commit, taking in its staged blobs."""
        names.check_name(repo)
        if digests.is_digest(reference):
            claimed = digests.parse(reference)
            digest, tag = digests.of(body, claimed.algorithm), None
            if digest != claimed:
                raise DigestInvalid(reference, message="manifest does not match its digest")
        else:
            digest, tag = digests.of(body), names.check_tag(reference)
        parsed = manifests.parse(body, media_type, max_size)
        descriptor: Descriptor = {
            "mediaType": parsed.media_type,
            "digest": str(digest),
            "size": len(body),
        }
        taken: dict[Digest, bytes] = {}
        bases = self._lineage.bases(names.branch_ref(repo), self._images(repo, parsed))

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> _Change | None:
            taken.clear()
            taken.update(self._referenced_blobs(repo, tree, parsed, batch))
            manifest_oid = batch.write(b"blob", body)  # once it is valid
            index = layout.read_index(self._cache, tree)
            if tag is not None:
                index = index.with_tag(tag, descriptor)
            else:
                index = index.with_manifest(descriptor)
            new_tree = self._trees(batch).layout(tree, index, add={**taken, digest: manifest_oid})
            where = f"{repo}:{tag}" if tag else f"{repo}@{digest}"
            trailers = [("Manifest-Digest", str(digest)), ("Media-Type", parsed.media_type)]
            if tag:
                trailers.insert(1, ("Tag", tag))
            trailers += [base.trailer() for base in bases]
            summary = f"push {where} {digest}" if tag else f"push {where}"
            edit = lineage.Edit(str(digest), parsed.layers)
            return _Change(new_tree, summary, trailers, lineage.parents(bases), edit)

        self._commit(repo, change)
        self._unstage(repo, set(taken))
        return Manifest(str(digest), parsed.media_type, body, _str(parsed.subject))

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        _, tree = self._tip(repo, must_exist=True)
        key = (
            str(digests.parse(reference))
            if digests.is_digest(reference)
            else names.check_tag(reference)
        )
        found = layout.read_index(self._cache, tree).find(key)
        if found is None:
            raise ManifestUnknown(reference)
        oid = layout.find_blob(self._cache, tree, digests.parse(found["digest"]))
        if oid is None:
            raise ManifestUnknown(reference)
        body = self._cache.raw(oid)
        parsed = self._parsed(oid)
        subject = parsed.subject if parsed is not None else None
        return Manifest(found["digest"], found["mediaType"], body, _str(subject))

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest and every tag on it (one commit); its layers stay until gc."""
        parsed = digests.parse(digest)

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> _Change | None:
            index = layout.read_index(self._cache, tree)
            if index.find(str(parsed)) is None:
                raise ManifestUnknown(str(parsed))
            gone = index.tags_of(str(parsed))
            left = index.without_manifest(str(parsed))
            return _Change(
                self._trees(batch).layout(tree, left, remove=[parsed]),
                f"delete manifest {repo}@{parsed}",
                [("Manifest-Digest", str(parsed))] + [("Tag", t) for t in gone],
                edit=lineage.Edit(str(parsed), None),
            )

        self._commit(repo, change, must_exist=True)

    def delete_tag(self, repo: str, tag: str) -> None:
        """Remove a tag (one commit); the manifest stays, untagged if it was its last tag."""
        names.check_tag(tag)

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> _Change | None:
            index = layout.read_index(self._cache, tree)
            found = index.find(tag)
            if found is None:
                raise ManifestUnknown(tag)
            return _Change(
                self._trees(batch).layout(tree, index.without_tag(tag)),
                f"delete tag {repo}:{tag}",
                [("Tag", tag), ("Manifest-Digest", found["digest"])],
            )

        self._commit(repo, change, must_exist=True)

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> dict:
        """An OCI image index (as a dict) of the manifests whose subject is `digest`."""
        subject = digests.parse(digest)
        names.check_name(repo)
        _, tree = self._tip(repo)
        found: dict[str, Descriptor] = {}
        for d, info in self._stored_manifests(tree):
            if info.subject != subject:
                continue
            if artifact_type is not None and info.artifact_type != artifact_type:
                continue
            entry: Descriptor = {
                "mediaType": d["mediaType"],
                "digest": d["digest"],
                "size": d["size"],
            }
            if info.artifact_type:
                entry["artifactType"] = info.artifact_type
            if info.annotations:
                entry["annotations"] = info.annotations
            found[d["digest"]] = entry
        return {
            "schemaVersion": 2,
            "mediaType": manifests.OCI_INDEX,
            "manifests": [found[k] for k in sorted(found)],
        }

    def put_blobs(self, repo: str, blobs: Iterator[tuple[str, BinaryIO, int]]) -> None:
        """Write whole blobs of known size (digest, stream, size), then stage them together.

        An import is all or nothing: a blob that does not match its digest raises before
        any of them is staged, so a bad archive moves no ref. The streams are read one at
        a time as `blobs` yields them, each in one pass like put_blob's.
        """
        names.check_name(repo)
        written: dict[Digest, bytes] = {}
        for digest, stream, size in blobs:
            parsed = digests.parse(digest)
            oid = objects.write_blob(self.path / "objects", stream.read, size, parsed)
            written[parsed] = oid.encode()
        self._stage(repo, written)

    # --- internals --------------------------------------------------------
    def _tip(self, repo: str, must_exist: bool = False) -> tuple[bytes | None, bytes | None]:
        """The branch's tip commit and its tree, read from the ref now (never cached)."""
        commit = refs.read(self._refs, names.branch_ref(repo))
        if commit is None:
            if must_exist:
                raise NameUnknown(repo)
            return None, None
        return commit, self._tree_of(commit)

    def _tree_of(self, commit: bytes) -> bytes:
        return self._cache.get("commit", commit, lambda: self._objects[commit].tree, _one)

    def _staged(self, repo: str) -> bytes | None:
        return refs.read(self._refs, names.staging_ref(repo))

    def _find_blob(self, repo: str, digest: Digest) -> bytes | None:
        """The git object of repo's blob `digest`, from its layout or its staging."""
        _, tree = self._tip(repo)
        found = layout.find_blob(self._cache, tree, digest)
        return found or layout.find_blob(self._cache, self._staged(repo), digest)

    def _need_blob(self, repo: str, digest: Digest) -> bytes:
        oid = self._find_blob(names.check_name(repo), digest)
        if oid is None:
            raise BlobUnknown(str(digest))
        return oid

    def _size(self, oid: bytes) -> int:
        def load() -> int:
            with objects.open_blob(self._objects, oid.decode()) as reader:
                return reader.size

        return self._cache.get("size", oid, load, _one)

    def _parsed(self, oid: bytes) -> ParsedManifest | None:
        """A stored manifest, parsed; None for one that no longer parses (e.g. pushed by git)."""

        def load() -> ParsedManifest | None:
            body = self._cache.raw(oid)
            try:
                return manifests.parse(body, max_size=len(body))
            except StoreError:
                return None

        return self._cache.get("manifest", oid, load, _one)

    def _stored_manifests(self, tree: bytes | None) -> Iterator[tuple[Descriptor, ParsedManifest]]:
        """Each manifest of a layout (once, whatever its tags), with what it says."""
        for d in layout.read_index(self._cache, tree).manifests():
            oid = layout.find_blob(self._cache, tree, digests.parse(d["digest"]))
            info = self._parsed(oid) if oid is not None else None
            if info is not None:
                yield d, info

    def _images(self, repo: str, parsed: ParsedManifest) -> list[lineage.Image]:
        """What a push's bases are looked up for: the image itself, or each platform's
        image of an index (already stored in `repo`, or the push is refused)."""
        if not parsed.children:
            return [(None, parsed.layers)]
        _, tree = self._tip(repo)
        found: list[lineage.Image] = []
        for child in parsed.children:
            oid = layout.find_blob(self._cache, tree, child.digest)
            info = self._parsed(oid) if oid is not None else None
            if info is not None:
                found.append((child.platform or lineage.UNKNOWN_PLATFORM, info.layers))
        return found

    def _referenced_blobs(
        self, repo: str, tree: bytes | None, parsed: ParsedManifest, batch: ObjectBatch
    ) -> dict[Digest, bytes]:
        """The blobs a manifest needs that are staged (to take in); raise if any is missing."""
        staged = self._staged(repo)
        taken: dict[Digest, bytes] = {}
        missing: list[str] = []
        supply_empty_config = False
        for ref in parsed.blobs:
            if layout.find_blob(self._cache, tree, ref.digest) is not None:
                continue
            oid = layout.find_blob(self._cache, staged, ref.digest)
            if oid is not None:
                taken[ref.digest] = oid
            elif ref.digest == manifests.EMPTY_CONFIG_DIGEST:
                supply_empty_config = True
            else:
                missing.append(str(ref.digest))
        for child in parsed.children:
            if layout.find_blob(self._cache, tree, child.digest) is None:
                missing.append(str(child.digest))
        if missing:
            raise ManifestBlobUnknown(missing)
        if supply_empty_config:
            empty = batch.write(b"blob", manifests.EMPTY_CONFIG)
            taken[manifests.EMPTY_CONFIG_DIGEST] = empty
        return taken

    def _commit(
        self,
        repo: str,
        change: _ChangeFunction,
        must_exist: bool = False,
    ) -> None:
        """Apply `change` to the tip as one commit; rebuild on the new tip if we lose a race.

        Changes to one branch that arrive while another is being written are written
        together after it: each is still a commit of its own, chained in the order
        they came, but their objects are synced once and the branch moves once.
        """
        ref = names.branch_ref(repo)
        self._queue(
            ref,
            _QueuedChange(change, must_exist),
            lambda queued: self._commit_all(repo, ref, queued),
        )

    def _commit_all(self, repo: str, ref: bytes, queued: list[_QueuedChange]) -> None:
        while True:
            tip, tree = self._tip(repo)
            head, head_tree = tip, tree
            written: list[tuple[bytes, _Change]] = []  # (commit, its change), in order
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
                self._maintenance.committed(len(written))
                edits = [(commit, change.edit) for commit, change in written if change.edit]
                self._lineage.committed(ref, tip, head, edits)
                return

    def _write_change(
        self,
        repo: str,
        item: _QueuedChange,
        tip: bytes | None,
        tree: bytes | None,
        batch: ObjectBatch,
    ) -> tuple[bytes, _Change] | None:
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
                empty = self._trees(batch).layout(None, Index.empty())
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

    def _trees(self, batch: ObjectBatch) -> TreeWriter:
        return TreeWriter(batch, self._cache)

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
        commit.message = _message(summary, trailers)
        return batch.write(b"commit", commit.as_raw_string())

    def _stage(self, repo: str, add: dict[Digest, bytes]) -> None:
        """Put uploaded blobs on repo's staging tree, unless its layout has them already."""
        _, tree = self._tip(repo)
        add = {d: oid for d, oid in add.items() if layout.find_blob(self._cache, tree, d) is None}
        if add:
            self._update_staging(repo, _StagingEdit(add, set()))

    def _unstage(self, repo: str, remove: set[Digest]) -> None:
        if remove:
            self._update_staging(repo, _StagingEdit({}, remove))

    def _update_staging(self, repo: str, edit: _StagingEdit) -> None:
        """Apply `edit` to the staging tree, with every other edit queued meanwhile.

        Eight clients uploading into one repository would otherwise take turns
        writing the staging tree once each; whoever holds the ref writes for all.
        """
        ref = names.staging_ref(repo)
        self._queue(ref, edit, lambda edits: self._apply_staging(repo, ref, edits))

    def _apply_staging(self, repo: str, ref: bytes, edits: list[_StagingEdit]) -> None:
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
            staged = self._staged(repo)
            with ObjectBatch(self._objects) as batch:
                new = self._trees(batch).staging(staged, add, remove)
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

    # --- history (storage.history) ----------------------------------------
    def _history(self) -> history.History:
        return history.History(
            history.Reads(
                self._cache,
                self._objects,
                self._tip,
                self.repositories,
                self.get_manifest,
                self._size,
            )
        )

    def log(self, repo: str, limit: int | None = None) -> Iterator[history.LogEntry]:
        """repo's own history, newest first, read as it is iterated; NameUnknown if none."""
        return self._history().log(repo, limit)

    def image(
        self,
        repo: str,
        reference: str,
        platform: str | None = None,
        inspect_layers: bool = True,
    ) -> history.Image:
        """One manifest in detail (`hroot show`); with `platform`, that child of an index."""
        return self._history().image(repo, reference, platform, inspect_layers)

    def diff(
        self, old: tuple[str, str], new: tuple[str, str], platform: str | None = None
    ) -> history.ImageDiff:
        """How image `new` differs from `old`, each a (repository, reference)."""
        reader = self._history()
        return history.diff(
            reader.image(*old, platform, inspect_layers=False),
            reader.image(*new, platform, inspect_layers=False),
        )

    def usage(self) -> history.Usage:
        """Each repository's tags, manifests and bytes, unique to it or shared."""
        return self._history().usage()


def _message(summary: str, trailers: list[tuple[str, str]]) -> bytes:
    lines = [summary, ""] + [f"{key}: {value}" for key, value in trailers]
    return ("\n".join(lines) + "\n").encode()


def _page(items: list[str], n: int | None, last: str | None) -> list[str]:
    if last is not None:
        items = [item for item in items if item > last]
    return items if n is None else items[:n]


def _str(value: object | None) -> str | None:
    return None if value is None else str(value)


def _one(_: object) -> int:
    return 1
