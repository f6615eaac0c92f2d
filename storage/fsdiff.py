"""Comparing two images' filesystems as their views show them (docs/format.md §9).

`hroot diff` (storage.store.Store.diff) lists the files that changed between two images
when the filesystem views (storage.fsview) of both show them. Their folders' trees are
compared in git, without reading a layer, equal subtrees skipped; the `.meta` lines say
what a tree cannot (modes, owners, kinds), their times left out: a time alone is no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage import layout, objects, refs
from storage.fsview import Parts, fs_ref, tag_views
from storage.rootfs import quote, unquote


@dataclass(frozen=True)
class FileChange:
    """A path whose content, kind, mode, ownership or link differs between two images
    (a time alone is no change). Modes are the tar's permission bits in octal; owners
    `uid:gid`; sizes those of a file's or symlink's content."""

    path: str
    change: str  # added, removed, changed
    kind: str  # dir, file, symlink, hardlink, char, block, fifo (the new one's if both)
    old_size: int | None
    new_size: int | None
    old_mode: str | None
    new_mode: str | None
    old_owner: str | None
    new_owner: str | None


@dataclass(frozen=True)
class _Folder:
    """One image as a view shows it: its folder's tree and its metadata lines by path
    (each without its time, which is no change by itself)."""

    tree: bytes | None
    meta: dict[bytes, list[bytes]]


def files_diff(
    parts: Parts, size: Callable[[bytes], int], old: tuple[str, str, str], new: tuple[str, str, str]
) -> list[FileChange] | None:
    """What changed in the filesystem from image `old` to `new`, each (repository, tag or
    digest, manifest digest), by path; None unless the views of both show them."""
    before, after = _shown_folder(parts, *old), _shown_folder(parts, *new)
    if before is None or after is None:
        return None
    blobs = _tree_changes(parts, before.tree, after.tree, b"")
    paths = set(blobs)
    paths.update(
        p for p in before.meta.keys() | after.meta.keys() if before.meta.get(p) != after.meta.get(p)
    )
    changes = []
    for path in sorted(paths):
        old_blob, new_blob = blobs.get(path) or (
            _blob_at(parts, before.tree, path),
            _blob_at(parts, after.tree, path),
        )
        old_meta, new_meta = before.meta.get(path), after.meta.get(path)
        if old_meta is None and new_meta is None and old_blob is None and new_blob is None:
            continue
        gone = old_meta is None and old_blob is None
        changes.append(
            FileChange(
                path="/" + path.decode(errors="replace"),
                change="added"
                if gone
                else "removed"
                if new_meta is None and new_blob is None
                else "changed",
                kind=(new_meta or old_meta or [b"", b"file"])[1].decode(),
                old_size=size(old_blob) if old_blob else None,
                new_size=size(new_blob) if new_blob else None,
                old_mode=old_meta[2].decode() if old_meta else None,
                new_mode=new_meta[2].decode() if new_meta else None,
                old_owner=old_meta[3].decode() if old_meta else None,
                new_owner=new_meta[3].decode() if new_meta else None,
            )
        )
    return changes


def _shown_folder(parts: Parts, repo: str, reference: str, digest: str) -> _Folder | None:
    """The folder of repo's view showing image `digest` (the tag `reference` names it,
    or any other tag does); None if no tag's folder shows it."""
    view_tip = refs.read(parts.refs, fs_ref(repo))
    if view_tip is None:
        return None
    tree = parts.tree_of(view_tip)
    views = tag_views(parts, view_tip)
    for tag in sorted(views, key=lambda tag: tag != reference):
        shown = views[tag].shown
        if shown.manifest == digest and not shown.images and "." not in shown.refused:
            folder = ""
        else:
            found = [f for f, d in shown.images.items() if d == digest and f not in shown.refused]
            if not found:
                continue
            folder = found[0]
        path = tag.encode() + (b"/" + folder.encode() if folder else b"")
        meta = parts.cache.raw_uncached(views[tag].meta_blob)  # type: ignore[arg-type]
        return _Folder(_lookup_tree(parts, tree, path), _meta_entries(meta, folder))
    return None


def _meta_entries(meta: bytes, folder: str) -> dict[bytes, list[bytes]]:
    """The entry lines of a `.meta` under `folder` (all for ""), by path below it,
    split into fields, the time left out."""
    prefix = b"/" + quote(folder.encode()) if folder else b""
    found = {}
    for line in meta.split(b"\n"):
        if not line.startswith(prefix + b"/"):
            continue
        fields = line.split(b" ")
        path = unquote(fields[0][len(prefix) + 1 :])
        found[path] = [f for f in fields if not f.startswith(b"mtime=")]
    return found


def _tree(parts: Parts, oid: bytes | None) -> dict[bytes, tuple[int, bytes]]:
    """A tree's entries, read past the store's cache (a filesystem's trees would crowd
    out what pushes and pulls keep there)."""
    if oid is None:
        return {}
    return dict(layout.GitTree.parse(objects.read_named(parts.objects, oid)[1]).items())


def _lookup_tree(parts: Parts, tree: bytes, path: bytes) -> bytes | None:
    found = _lookup(parts, tree, path)
    return found[1] if found is not None and found[0] == layout.TREE_MODE else None


def _blob_at(parts: Parts, tree: bytes | None, path: bytes) -> bytes | None:
    found = _lookup(parts, tree, path)
    return found[1] if found is not None and found[0] != layout.TREE_MODE else None


def _lookup(parts: Parts, tree: bytes | None, path: bytes) -> tuple[int, bytes] | None:
    """(mode, id) at `path` under `tree`, or None."""
    entry: tuple[int, bytes] | None = (layout.TREE_MODE, tree) if tree else None
    for name in path.split(b"/"):
        if entry is None or entry[0] != layout.TREE_MODE:
            return None
        entry = _tree(parts, entry[1]).get(name)
    return entry


def _tree_changes(
    parts: Parts, old: bytes | None, new: bytes | None, prefix: bytes
) -> dict[bytes, tuple[bytes | None, bytes | None]]:
    """Path -> (old blob, new blob) of each file or symlink that differs between two
    trees, in content or git mode; equal subtrees are not read."""
    found: dict[bytes, tuple[bytes | None, bytes | None]] = {}
    if old == new:
        return found
    before, after = _tree(parts, old), _tree(parts, new)
    for name in before.keys() | after.keys():
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        sub_a = a[1] if a and a[0] == layout.TREE_MODE else None
        sub_b = b[1] if b and b[0] == layout.TREE_MODE else None
        if sub_a or sub_b:
            found.update(_tree_changes(parts, sub_a, sub_b, prefix + name + b"/"))
        blob_a = a[1] if a and not sub_a else None
        blob_b = b[1] if b and not sub_b else None
        if blob_a or blob_b:
            found[prefix + name] = (blob_a, blob_b)
    return found
