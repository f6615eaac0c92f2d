"""The git-backed image store: one registry in one bare git repository (docs/format.md).

Each repository `name` is the branch `hroot/<name>`, whose commits' trees are OCI
image layouts; uploaded blobs wait on `refs/hroot/staging/<name>` until a manifest
takes them in. Every change is a compare-and-swap of a ref that retries on a new
tip, so concurrent writers (threads or processes) never lose each other's work.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit
from dulwich.repo import Repo

from storage import (
    commitlog,
    commits,
    digests,
    filestore,
    fsdiff,
    fsview,
    gc,
    gitcli,
    history,
    holders,
    layout,
    lineage,
    manifests,
    names,
    objects,
    pointers,
    pushes,
    refs,
    repository,
    retention,
    space,
)
from storage.commits import Change
from storage.digests import Digest
from storage.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestUnknown,
    NameUnknown,
    RepositoryChanged,
    StoreError,
)
from storage.index import Descriptor
from storage.layers import LIMITS, Limits
from storage.layout import ObjectCache, TreeWriter
from storage.maintenance import Maintenance
from storage.manifests import ParsedManifest
from storage.objects import ObjectBatch
from storage.types import BlobInfo, BlobReader, Committed, Manifest, Removed, UploadWriter
from storage.uploads import Uploads

__all__ = ["BlobInfo", "BlobReader", "Manifest", "Store", "UploadWriter"]

GC_EVERY = 500  # commits between two `git gc --auto` (storage.maintenance)
# Uncached manifests of one layout from which git reads them in one batch (_parse_ahead).
_READ_AHEAD = 32
_READ_AHEAD_CHUNK = 512  # manifests parsed ahead at a time


P = ParamSpec("P")
R = TypeVar("R")


def _writing(method: Callable[P, R]) -> Callable[P, R]:
    """Hold the store's write gate through the method: from the first object it writes
    to the ref that names it, so that `gc` (storage.gc) never prunes in between."""

    @functools.wraps(method)
    def held(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0]._gate.writing():  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return held


class Store:
    """One registry in one bare git repository. Every method is blocking and thread-safe."""

    def __init__(self, repo: Repo, gc_every: int = GC_EVERY) -> None:
        self._repo = repo
        self.path = Path(repo.controldir())
        self._objects = repo.object_store
        # dulwich takes core.bigFileThreshold (8 MiB here, for `git gc`) as the largest
        # loose object it will read; index.json and trees of big repositories are larger.
        self._objects.loose_object_size_limit = 1 << 40
        objects.guard_pack_cache(self._objects)
        self._refs = repo.refs
        refs.guard_packed_refs(self._refs)
        self._cache = ObjectCache(self._objects)
        self._files = filestore.FileStore(self._objects, self._cache)
        self._uploads = Uploads(self.path / "hroot" / "uploads", self.path / "objects", self._files)
        self._gate = gc.WriteGate()
        self._presence = gc.Presence(self.path)
        self._maintenance = maintenance = Maintenance(self.path, gc_every)
        self._lineage = lineage.Lineage(
            self.path, self._refs, self._objects, self._tree_of, self._stored_manifests
        )
        self._writer = commits.Writer(
            self._objects, self._refs, self._cache, self._tip, self._lineage, maintenance
        )
        self._pushes = pushes.PushIndex(self.path)
        self._holders_index = holders.Holders(self.path)

    @classmethod
    def open(cls, path: str | Path, create: bool = True, gc_every: int = GC_EVERY) -> Store:
        """Open the registry at `path` (a bare git repository): create it if asked, adopt
        or upgrade it (storage.repository); RepositoryRefused for a path not hroot's.

        Every `gc_every` commits `git gc --auto` is started in the background (0: never).
        """
        return cls(repository.open_repo(Path(path), create), gc_every)

    def prepare_lineage(self, pause: Callable[[], None] = lineage.no_pause) -> None:
        """Read every repository's images into the lineage index (storage.lineage), so
        that no push waits for it; a server calls this in the background at start, with
        a `pause` that lets requests go first, called between pieces of the work."""
        self._lineage.prepare(pause)

    def close(self) -> None:
        self._uploads.close()
        self._lineage.close()
        self._presence.close()
        self._repo.close()

    # --- listings ---------------------------------------------------------
    @property
    def maintenance_runs(self) -> int:
        """How many `git gc --auto` runs this store started since it opened."""
        return self._maintenance.runs

    def on_commit(self, listener: Callable[[Committed], None]) -> None:
        """Call `listener` with each commit this store makes on a repository's branch, once
        the branch points past it, in the writing thread: it must be quick and not raise."""
        self._writer.listeners.append(listener)

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
        return BlobInfo(str(parsed), self._size(self._need_blob(repo, parsed), parsed))

    def open_blob(self, repo: str, digest: str) -> BlobReader:
        """The blob, to stream (its `size` known at once, so one lookup serves a Range);
        a layer stored as files is rebuilt as it streams (storage.filestore)."""
        parsed = digests.parse(digest)
        return self._files.open(self._need_blob(repo, parsed), parsed)

    @space.raises_storage_full
    @_writing
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
        self._stage(repo, {parsed: self._write_blob(stream, size, parsed)})
        return BlobInfo(str(parsed), size)

    @space.raises_storage_full
    @_writing
    def mount_blob(self, repo: str, digest: str, from_repo: str) -> BlobInfo | None:
        """Link from_repo's blob into repo (the same git object); None if it has none."""
        parsed = digests.parse(digest)
        names.check_name(repo)
        oid = self._find_blob(from_repo, parsed)
        if oid is None:
            return None
        self._stage(repo, {parsed: oid})
        return BlobInfo(str(parsed), self._size(oid, parsed))

    @space.raises_storage_full
    @_writing
    def delete_blob(self, repo: str, digest: str) -> None:
        """Remove the blob from repo's staging and from its layout (one commit)."""
        parsed = digests.parse(digest)
        self._need_blob(repo, parsed)
        self._unstage(repo, {parsed})

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> Change | None:
            if layout.find_blob(self._cache, tree, parsed) is None:
                return None
            index = layout.read_index(self._cache, tree)
            return Change(
                self._trees(batch).layout(tree, index, remove=[parsed]),
                f"delete blob {repo}@{parsed}",
                [("Blob-Digest", str(parsed))],
                edits=[lineage.Edit(str(parsed), None)],  # a manifest without its blob is no base
            )

        self._writer.commit(repo, change)

    # --- uploads ----------------------------------------------------------
    @space.raises_storage_full
    def start_upload(self, repo: str) -> str:
        return self._uploads.start(names.check_name(repo))

    # Each use of an upload may give a `lifetime` in seconds: an upload opened longer ago
    # than that is BlobUploadUnknown, and its spool is removed (storage.uploads).

    def upload_size(self, repo: str, upload_id: str, lifetime: float | None = None) -> int:
        return self._uploads.size(repo, upload_id, lifetime)

    def open_upload(
        self,
        repo: str,
        upload_id: str,
        offset: int | None = None,
        length: int | None = None,
        lifetime: float | None = None,
    ) -> UploadWriter:
        """Open for appending; UploadOutOfOrder if `offset` is given and is not the end.

        `length`, the bytes this write brings if known, lets a first write that turns
        out to be the whole blob finish without reading it again.
        """
        return self._uploads.open(repo, upload_id, offset, length, lifetime)

    @space.raises_storage_full
    @_writing
    def finish_upload(
        self, repo: str, upload_id: str, digest: str, lifetime: float | None = None
    ) -> BlobInfo:
        """Check the digest, make the upload a git object and stage it."""
        parsed = digests.parse(digest)
        oid, size = self._uploads.finish(repo, upload_id, parsed, lifetime)
        self._maintenance.wrote(size)
        self._stage(repo, {parsed: oid})
        return BlobInfo(str(parsed), size)

    def cancel_upload(self, repo: str, upload_id: str, lifetime: float | None = None) -> None:
        self._uploads.cancel(repo, upload_id, lifetime)

    def ensure_room(self, size: int, margin: int) -> None:
        """StorageFull unless a write of `size` bytes leaves `margin` bytes free."""
        space.ensure_room(self.path, size, margin)

    # --- manifests --------------------------------------------------------
    @space.raises_storage_full
    @_writing
    def put_manifest(
        self,
        repo: str,
        reference: str,
        body: bytes,
        media_type: str | None = None,
        max_size: int = manifests.MAX_MANIFEST_SIZE,
        provenance: Sequence[tuple[str, str]] = (),
    ) -> Manifest:
        """Put a manifest by digest or under a tag: one commit, taking in its staged blobs.

        `provenance`: more trailers saying where it came from (a pull-through proxy's
        `Proxied-From`, docs/format.md §4)."""
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

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> Change | None:
            taken.clear()
            taken.update(self._referenced_blobs(repo, tree, parsed, batch))
            manifest_oid = batch.write(b"blob", body)  # once it is valid
            index = layout.read_index(self._cache, tree)
            previous = index.find(tag) if tag is not None else None
            if tag is not None:
                index = index.with_tag(tag, descriptor)
            else:
                index = index.with_manifest(descriptor)
            new_tree = self._trees(batch).layout(tree, index, add={**taken, digest: manifest_oid})
            where = f"{repo}:{tag}" if tag else f"{repo}@{digest}"
            trailers = [("Manifest-Digest", str(digest)), ("Media-Type", parsed.media_type)]
            if tag:
                trailers.insert(1, ("Tag", tag))
            if previous is not None and previous["digest"] != str(digest):
                trailers.append(("Previous-Digest", previous["digest"]))
            trailers += [base.trailer() for base in bases]
            trailers += provenance
            summary = f"push {where} {digest}" if tag else f"push {where}"
            edit = lineage.Edit(str(digest), parsed.layers)
            return Change(new_tree, summary, trailers, lineage.parents(bases), [edit])

        self._writer.commit(repo, change)
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

    @space.raises_storage_full
    @_writing
    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest and every tag on it (one commit); its layers stay until gc."""
        parsed = digests.parse(digest)

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> Change | None:
            index = layout.read_index(self._cache, tree)
            if index.find(str(parsed)) is None:
                raise ManifestUnknown(str(parsed))
            gone = index.tags_of(str(parsed))
            left = index.without_manifest(str(parsed))
            return Change(
                self._trees(batch).layout(tree, left, remove=[parsed]),
                f"delete manifest {repo}@{parsed}",
                [("Manifest-Digest", str(parsed))] + [("Tag", t) for t in gone],
                edits=[lineage.Edit(str(parsed), None)],
            )

        self._writer.commit(repo, change, must_exist=True)

    @space.raises_storage_full
    @_writing
    def delete_tag(self, repo: str, tag: str) -> None:
        """Remove a tag (one commit); the manifest stays, untagged if it was its last tag."""
        names.check_tag(tag)

        def change(tip: bytes | None, tree: bytes | None, batch: ObjectBatch) -> Change | None:
            index = layout.read_index(self._cache, tree)
            found = index.find(tag)
            if found is None:
                raise ManifestUnknown(tag)
            return Change(
                self._trees(batch).layout(tree, index.without_tag(tag)),
                f"delete tag {repo}:{tag}",
                [("Tag", tag), ("Manifest-Digest", found["digest"])],
            )

        self._writer.commit(repo, change, must_exist=True)

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

    @space.raises_storage_full
    @_writing
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
            written[parsed] = self._write_blob(stream, size, parsed)
        self._stage(repo, written)

    def remove(self, repo: str) -> Removed:
        """Delete repository `repo` in one step: its branch, its staged blobs, its uploads.

        The branch is deleted by compare-and-swap from the tip read, so a push that lands
        meanwhile is never dropped unseen: RepositoryChanged, and nothing is removed. Its
        objects stay in git (other branches may share them) until a gc prunes them.
        """
        branch = names.branch_ref(names.check_name(repo))
        tip = refs.read(self._refs, branch)
        if tip is None:
            raise NameUnknown(repo)
        if not refs.compare_and_swap(self._refs, branch, tip, None):
            raise RepositoryChanged(repo)
        fsview.remove(self._fs_parts(), repo)
        staging = names.staging_ref(repo)
        staged = False
        while (held := refs.read(self._refs, staging)) is not None:
            staged = refs.compare_and_swap(self._refs, staging, held, None) or staged
        uploads = 0
        for folder in (self.path / "hroot" / "uploads").iterdir():  # as Uploads keeps them
            try:
                self._uploads.cancel(repo, folder.name)
                uploads += 1
            except BlobUploadUnknown:  # another repository's, or finished meanwhile
                continue
        return Removed(repo, tip.decode(), staged, uploads)

    # --- housekeeping (storage.gc, storage.retention) -----------------------
    @space.raises_storage_full
    @_writing
    def retain(
        self, rules: retention.Rules, expiry: float = gc.EXPIRY_SECONDS, dry_run: bool = False
    ) -> retention.Dropped:
        """Drop untagged manifests and cut histories as `rules` say (storage.retention);
        with `dry_run`, only say what would go. Nothing younger than `expiry` is taken
        for untagged: a push of an index names its images only after pushing them."""
        parts = retention.Parts(
            self._objects,
            self._refs,
            self._cache,
            self._writer,
            self._tip,
            self._parsed,
            self.repositories,
        )
        return retention.apply(parts, rules, expiry, dry_run)

    def gc(
        self,
        expiry: float = gc.EXPIRY_SECONDS,
        step: gc.Step | None = None,
        rules: retention.Rules | None = None,
    ) -> gc.GcReport:
        """Drop what retention `rules` let go, if any; remove abandoned uploads, tmp
        files, staging and stale locks older than `expiry` seconds; then repack and
        prune. One run at a time, never beside the background `git gc --auto`; pushes
        and pulls go on meanwhile."""
        with self._maintenance.run_lock, gc.running(self.path, self._presence, expiry):
            (step or (lambda _: None))("retain")
            dropped = self.retain(rules, expiry) if rules is not None and rules.any else None
            if dropped and expiry < gc.PRUNE_GRANULARITY_SECONDS:
                # git prune keeps what recent unreachable objects refer to, and counts
                # whole seconds: the commits retention just replaced (the untagged drop
                # on the old history, the staging tree of the blobs it swept) would keep
                # what it dropped until the next run. With no expiry, let them age first.
                time.sleep(gc.PRUNE_GRANULARITY_SECONDS - expiry)
            report = gc.collect(self.path, self._refs, self._objects, self._gate, expiry, step)
            report.dropped = dropped
            return report

    def remove_stale_locks(self) -> int:
        """Remove ref locks a crash left; how many. With another process on the registry,
        those older than any live writer holds one; alone, those over a second old (after
        waiting that second), so that a server restarted at once after a crash does not
        keep its pushes waiting for the crash's locks to grow stale."""
        if not self._presence.alone():
            return gc.remove_stale_locks(self.path)
        if gc.stale_locks(self.path, older_than=0):
            time.sleep(gc.ALONE_STALE_LOCK_SECONDS * 1.1)
        return gc.remove_stale_locks(self.path, gc.ALONE_STALE_LOCK_SECONDS)

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
        return self._cache.get(
            "commit", commit, lambda: _commit_tree(self._objects, commit), layout.one
        )

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

    def _write_blob(self, stream: BinaryIO, size: int, digest: Digest) -> bytes:
        """Write a whole blob in one pass; if it is a tar, store it as files too
        (storage.filestore) and give that: the whole object is then named by nothing,
        and the next gc past the expiry prunes it."""
        oid = objects.write_blob(self.path / "objects", stream.read, size, digest)
        with objects.open_blob(self._objects, oid) as reader:
            stored = self._files.store(reader.read, size, digest)
        self._maintenance.wrote(size + (stored.written if stored else 0))
        return stored.oid if stored else oid.encode()

    def _size(self, oid: bytes, digest: Digest) -> int:
        """The size of the blob stored as `oid` at `digest`'s path (a pointer's layer's)."""
        # by path too: a pointer's bytes pushed as a blob of their own are the same object
        key = oid + str(digest).encode()
        return self._cache.get("size", key, lambda: self._files.size(oid, digest), layout.one)

    def _object_size(self, oid: bytes) -> int:
        """The size of git blob `oid` itself (a file of a filesystem view)."""

        def load() -> int:
            with objects.open_blob(self._objects, oid.decode()) as reader:
                return reader.size

        return self._cache.get("object-size", oid, load, layout.one)

    def _size_ahead(self, blobs: list[tuple[bytes, Digest]]) -> None:
        """Learn the sizes of many blobs (oid, the digest whose path holds it) that are not
        cached from one git process: `hroot ls` and the repository list count every blob
        of the registry (10,000 small ones, stored as deltas, took dulwich 3.3 s of the
        5 s the count took, profiled). A blob small enough to be a pointer (§10) is left
        to `_size`, which reads it."""
        missing = {
            oid + str(digest).encode(): oid
            for oid, digest in blobs
            if not self._cache.holds("size", oid + str(digest).encode())
        }
        if len(missing) < _READ_AHEAD:
            return
        sizes = gitcli.object_sizes(self.path, list(set(missing.values())))
        for key, oid in missing.items():
            size = sizes.get(oid)
            if size is not None and size > pointers.MAX_SIZE:
                self._cache.put("size", key, size, 1)

    def _parsed(self, oid: bytes) -> ParsedManifest | None:
        """A stored manifest, parsed; None for one that no longer parses (e.g. pushed by git)."""
        return self._cache.get("manifest", oid, lambda: _parse(self._cache.raw(oid)), layout.one)

    def _stored_manifests(self, tree: bytes | None) -> Iterator[tuple[Descriptor, ParsedManifest]]:
        """Each manifest of a layout (once, whatever its tags), with what it says."""
        found = [
            (d, layout.find_blob(self._cache, tree, digests.parse(d["digest"])))
            for d in layout.read_index(self._cache, tree).manifests()
        ]
        for start in range(0, len(found), _READ_AHEAD_CHUNK):  # a pause may come between
            chunk = found[start : start + _READ_AHEAD_CHUNK]
            self._parse_ahead([oid for _, oid in chunk if oid is not None])
            for d, oid in chunk:
                info = self._parsed(oid) if oid is not None else None
                if info is not None:
                    yield d, info

    def _parse_ahead(self, oids: list[bytes]) -> None:
        """Parse many manifests that are not cached through one git process: the lineage
        index reads every manifest of the registry after a restart, 10,000 in one
        repository of the benchmark (storage.gitcli.read_objects)."""
        missing = [oid for oid in oids if not self._cache.holds("manifest", oid)]
        if len(missing) < _READ_AHEAD:
            return
        for oid, body in gitcli.read_objects(self.path, missing):
            if body is not None:
                self._cache.put("manifest", oid, _parse(body), 1)

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

    def _trees(self, batch: ObjectBatch) -> TreeWriter:
        return TreeWriter(batch, self._cache)

    def _stage(self, repo: str, add: dict[Digest, bytes]) -> None:
        """Put uploaded blobs on repo's staging tree, unless its layout has them already."""
        _, tree = self._tip(repo)
        add = {d: oid for d, oid in add.items() if layout.find_blob(self._cache, tree, d) is None}
        if add:
            self._writer.update_staging(repo, add, set())

    def _unstage(self, repo: str, remove: set[Digest]) -> None:
        if remove:
            self._writer.update_staging(repo, {}, remove)

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
                self._size_ahead,
                self._pushes.find,
                self._holders,
            )
        )

    def log(self, repo: str, limit: int | None = None) -> Iterator[history.LogEntry]:
        """repo's own history, newest first, read as it is iterated; NameUnknown if none."""
        return self._history().log(repo, limit)

    def commit_log(self, repo: str, skip: int, n: int) -> list[commitlog.Commit]:
        """Up to n commits of repo's own history after the newest `skip`, as their first
        lines and trailers say (storage.commitlog: git log, for the history graph);
        NameUnknown if repo has no branch."""
        tip, _ = self._tip(repo, must_exist=True)
        assert tip is not None
        return commitlog.commits(self.path, tip.decode(), skip, n)

    def pushes(self, repo: str) -> Mapping[str, history.Pushed]:
        """Each manifest digest repo's own (first-parent) history pushed -> its newest push:
        one `git log` per branch, kept and extended as the branch grows (storage.pushes);
        NameUnknown if repo has no branch."""
        tip, _ = self._tip(repo, must_exist=True)
        assert tip is not None
        return self._pushes.of(repo, tip)

    def pushes_indexed(self, repo: str) -> bool:
        """Whether `pushes(repo)` has its index already and reads at most the commits
        since: the pages read a very long history's index in the background instead."""
        return self._pushes.has(repo)

    def image(
        self,
        repo: str,
        reference: str,
        platform: str | None = None,
        inspect_layers: bool = True,
    ) -> history.Image:
        """One manifest in detail (`hroot show`); with `platform`, that child of an index."""
        return self._history().image(repo, reference, platform, inspect_layers)

    def holders(self, wanted: Sequence[str], repositories: Sequence[str]) -> dict[str, list[str]]:
        """Each of `wanted` (digests) -> those of `repositories` whose tip holds that blob, in one
        git process however many repositories there are (storage.holders)."""
        parsed = {text: digests.parse_or_none(text) for text in wanted}
        found = self._holders([d for d in parsed.values() if d is not None], repositories)
        return {text: found[d] if d is not None else [] for text, d in parsed.items()}

    def _holders(
        self, wanted: Sequence[Digest], repositories: Sequence[str]
    ) -> dict[Digest, list[str]]:
        return self._holders_index.of(wanted, repositories)

    def summary(self, repo: str, reference: str) -> history.Summary:
        """Manifest `reference` of repo in brief: digest, media type, size, platforms."""
        return self._history().summary(repo, reference)

    def diff(
        self, old: tuple[str, str], new: tuple[str, str], platform: str | None = None
    ) -> history.ImageDiff:
        """How image `new` differs from `old`, each a (repository, reference); with the
        files that differ when the filesystem views of both show them (storage.fsdiff)."""
        reader = self._history()
        before = reader.image(*old, platform, inspect_layers=False)
        after = reader.image(*new, platform, inspect_layers=False)
        found = history.diff(before, after)
        files = fsdiff.files_diff(
            self._fs_parts(),
            self._object_size,
            (before.repository, before.reference, before.digest),
            (after.repository, after.reference, after.digest),
        )
        return dataclasses.replace(found, files=files)

    # --- the filesystem view (storage.fsview, docs/format.md §9) ------------------------
    @space.raises_storage_full
    @_writing
    def build_fs_view(
        self, repo: str, tag: str | None = None, limits: Limits = LIMITS
    ) -> fsview.Built:
        """Bring the view `refs/hroot/fs/<repo>` up to repo's tags (with `tag`, build
        that tag's folder only), streaming each new image's layers into git; one commit,
        none if nothing changed. An image the view refuses (beyond `limits`, hostile,
        damaged) is noted, never raised; NameUnknown (its view dropped) for a repository
        that does not exist, ManifestUnknown for a tag it has not."""
        names.check_name(repo)
        if tag is not None:
            names.check_tag(tag)
        return fsview.build(dataclasses.replace(self._fs_parts(), limits=limits), repo, tag)

    def fs_view_commit(self, repo: str) -> str | None:
        """The commit of repo's view, if it has one."""
        found = refs.read(self._refs, fsview.fs_ref(names.check_name(repo)))
        return found.decode() if found is not None else None

    def _fs_parts(self) -> fsview.Parts:
        return fsview.Parts(
            self.path,
            self._objects,
            self._refs,
            self._cache,
            self._tip,
            self._tree_of,
            self._parsed,
            self._files.open,
        )

    def usage(self, pause: Callable[[], None] = lineage.no_pause) -> history.Usage:
        """Each repository's tags, manifests and bytes, unique to it or shared; `pause`
        is called between repositories, as in prepare_lineage."""
        return self._history().usage(pause)


def _commit_tree(store: DiskObjectStore, commit: bytes) -> bytes:
    """The tree of `commit`, which a ref names (objects.read_named)."""
    return Commit.from_raw_string(*objects.read_named(store, commit), sha=commit).tree


def _page(items: list[str], n: int | None, last: str | None) -> list[str]:
    if last is not None:
        items = [item for item in items if item > last]
    return items if n is None else items[:n]


def _parse(body: bytes) -> ParsedManifest | None:
    try:
        return manifests.parse(body, max_size=len(body))
    except StoreError:
        return None


def _str(value: object | None) -> str | None:
    return None if value is None else str(value)
