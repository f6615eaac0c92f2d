"""Checks of what the registry's branches hold (docs/format.md §2-3), for `hroot fsck`
and for `hroot bundle apply`, which must not let a corrupt bundle in.

`git fsck` proves the git objects are whole; it cannot know that a file named
`blobs/sha256/<hex>` must hash to that digest, that index.json must list manifests
that are there, or that a manifest's layers must be beside it. These checks read
each branch's tip as hroot serves it and say, in words, what is wrong. Blob bytes
are streamed (memory stays flat for any layer size) and hashed once per git object
per run, however many branches share the blob.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from dulwich.repo import Repo

from storage import digests, manifests, names, objects
from storage.digests import Digest
from storage.errors import StoreError
from storage.filestore import FileStore
from storage.layout import FILE_MODE, ObjectCache, entry, find_blob


class Checker:
    """One run of checks over one repository: its object caches live as long as it does."""

    def __init__(self, gitdir: Path) -> None:
        self._repo = Repo(str(gitdir))
        self._objects = self._repo.object_store
        self._objects.loose_object_size_limit = 1 << 40  # as Store does: big index.json
        self._cache = ObjectCache(self._objects)
        self._files = FileStore(self._objects, self._cache)
        self._hashes: dict[tuple[bytes, str], str | None] = {}  # (oid, alg) -> hex; None: lost
        self._sizes: dict[bytes, int] = {}  # each blob hashed: its size
        self._lost: dict[bytes, str] = {}  # each blob git cannot give: why

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tips(self) -> dict[str, str]:
        """Every `refs/heads/hroot/*` branch and its commit."""
        found = self._repo.refs.as_dict(names.BRANCH_PREFIX)
        return {(names.BRANCH_PREFIX + k).decode(): v.decode() for k, v in found.items()}

    def branch(self, ref: str, commit: str) -> list[str]:
        """The problems of branch `ref` (a full ref name) at `commit`; empty when clean."""
        found: list[str] = []
        try:
            found.extend(self._branch(ref, commit))
        except KeyError as e:  # a tree or index.json git lacks: `git fsck` says more
            missing = e.args[0] if e.args else "?"
            found.append(f"git object {_text(missing)} is missing")
        except (OSError, zlib.error) as e:  # a damaged object: `git fsck` names it
            found.append(f"a git object is unreadable: {e}")
        where = ref.removeprefix("refs/heads/")
        return [f"{where}: {problem}" for problem in found]

    def _branch(self, ref: str, commit: str) -> Iterator[str]:
        encoded = ref.encode().removeprefix(names.BRANCH_PREFIX)
        if not _decodes(encoded):
            yield "the branch name is no repository name (docs/format.md §2)"
        try:
            tree = self._objects[commit.encode()].tree
        except KeyError:
            yield f"commit {commit} is missing"
            return
        if entry(self._cache, tree, b"oci-layout") is None:
            yield "oci-layout is missing"
        yield from self._manifests(tree)
        yield from (problem for _, problem in self.blobs(tree))

    def blobs(self, tree: bytes) -> Iterator[tuple[Digest | None, str]]:
        """The problems of the `blobs/<alg>/<hex>` files of a layout or staging tree, each
        with the digest whose file does not hold its bytes (None: a wrong name or mode)."""
        root = entry(self._cache, tree, b"blobs")
        if root is None:
            return
        for algorithm, (_, by_hex) in sorted(self._cache.tree(root).items()):
            for name, (mode, oid) in sorted(self._cache.tree(by_hex).items()):
                path = f"blobs/{algorithm.decode()}/{name.decode()}"
                try:
                    digest = digests.parse(f"{algorithm.decode()}:{name.decode()}")
                except StoreError:
                    yield None, f"{path}: the name is no digest"
                    continue
                if mode != FILE_MODE:
                    yield None, f"{path}: not a file (mode {mode:o})"
                    continue
                found = self._hash(oid, digest)
                if found is None:
                    yield digest, f"{path}: git object {oid.decode()} is {self._lost[oid]}"
                elif found != digest.hex:
                    yield digest, f"{path}: content hashes to {digest.algorithm}:{found}"

    def hashed(self) -> tuple[int, int]:
        """How many distinct blobs this run has hashed so far, and their bytes."""
        return len(self._sizes), sum(self._sizes.values())

    def _manifests(self, tree: bytes) -> Iterator[str]:
        """index.json parses; each manifest it lists is there, whole, and has its blobs."""
        index_oid = entry(self._cache, tree, b"index.json")
        if index_oid is None:
            yield "index.json is missing"
            return
        try:
            raw = self._cache.raw_uncached(index_oid)
            listed = manifests.parse(raw, manifests.OCI_INDEX, max_size=len(raw)).children
        except StoreError as e:
            yield f"index.json: {e.detail or e.message}"
            return
        for descriptor in {d.digest: d for d in listed}.values():
            oid = find_blob(self._cache, tree, descriptor.digest)
            if oid is None:
                yield f"index.json lists {descriptor.digest}; {_path(descriptor.digest)} is missing"
                continue
            try:
                body = self._cache.raw(oid)
                parsed = manifests.parse(body, max_size=len(body))
            except KeyError:
                continue  # a missing object: _blob_hashes says so
            except StoreError as e:
                yield f"manifest {descriptor.digest} does not parse: {e.detail or e.message}"
                continue
            if len(body) != descriptor.size:
                yield (
                    f"manifest {descriptor.digest} has {len(body)} bytes, "
                    f"index.json says {descriptor.size}"
                )
            for ref in [*parsed.blobs, *parsed.children]:  # a subject may live elsewhere
                if find_blob(self._cache, tree, ref.digest) is None:
                    yield f"manifest {descriptor.digest} needs {ref.digest}, which is missing"

    def _hash(self, oid: bytes, digest: Digest) -> str | None:
        """The digest of blob `oid` at `digest`'s path (a layer stored as files rebuilt),
        streamed and remembered; None if git cannot give an object (`_lost` says why)."""
        key = (oid, digest.algorithm)
        if key not in self._hashes:
            hasher = digest.hasher()
            try:
                with self._files.open(oid, digest) as reader:
                    while chunk := reader.read(objects.CHUNK):
                        hasher.update(chunk)
                    self._sizes[oid] = reader.size
                self._hashes[key] = hasher.hexdigest()
            except KeyError:
                self._hashes[key], self._lost[oid] = None, "missing"
            except (OSError, zlib.error) as e:
                self._hashes[key], self._lost[oid] = None, f"unreadable ({e})"
        return self._hashes[key]


def check(gitdir: Path, tips: Mapping[str, str] | None = None) -> list[str]:
    """The problems of branches `tips` (full ref name -> commit; None: every `hroot/`
    branch at its tip), each a line for a person; empty when all is well."""
    with Checker(gitdir) as checker:
        chosen = checker.tips() if tips is None else tips
        return [problem for ref in sorted(chosen) for problem in checker.branch(ref, chosen[ref])]


def _decodes(encoded: bytes) -> bool:
    """Whether a branch's name is one that names.encode gives for some repository name."""
    try:
        return names.encode(names.decode(encoded)) == encoded
    except (StoreError, UnicodeDecodeError):
        return False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"
