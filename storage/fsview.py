"""The filesystem view of a repository's tags (docs/format.md §9), built.

`refs/hroot/fs/ENCODED` holds, for every tag of the repository, the image's root
filesystem as a git tree (`<tag>/`, or `<tag>/<os>-<arch>[-<variant>]/` for each platform
of an index), and under `.hroot/<tag>.meta` what a git tree cannot hold (modes,
ownership, times, hard links, devices, fifos, empty folders, xattrs), so that `git diff`
and `git log -- path` work on what is inside images.

Each build streams the layers of the images it has not shown yet into git, their files
as blobs of one pack and then the trees and commit through one `git fast-import`
(storage.fastimport), each image's through its own root filesystem
(storage.rootfs). A tag whose image was shown before (the same manifest, under any tag)
keeps its folder's tree without reading a layer. An image the view refuses
(storage.layers.Refused) has no folder; its `.meta` says why, so that it is not tried
again until its tag moves. Comparing two images' folders is storage.fsdiff's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.refs import DiskRefsContainer

from storage import digests, layout, names, objects, refs
from storage.digests import Digest
from storage.errors import GitFailed, ManifestUnknown, NameUnknown
from storage.fastimport import MODE_FILE, MODE_TREE, Writer
from storage.layers import LIMITS, Limits, Refused, decompressed, entries
from storage.layout import ObjectCache
from storage.manifests import INDEX_TYPES, ParsedManifest
from storage.rootfs import Rootfs
from storage.types import BlobReader

FS_PREFIX = b"refs/hroot/fs/"
META_FOLDER = b".hroot"
META_SUFFIX = b".meta"
META_TITLE = b"# hroot filesystem view (docs/format.md \xc2\xa79): one line per entry, by path"
IMAGE_COMMIT = "Image-Commit"
BUILD_ATTEMPTS = 3  # another writer (a `hroot fs build` beside a server) moved the ref
_HEADER_PIECE = 4096  # bytes of a .meta read at a time for its header
_FOREIGN_OS = "unknown"  # an index's entry for attestations, not a platform


def fs_ref(name: str) -> bytes:
    return FS_PREFIX + names.encode(name)


# --- the header of a tag's `.meta` --------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """What a tag's `.meta` says it shows: the manifest, each platform's image, refusals."""

    manifest: str
    images: dict[str, str]  # platform folder -> image manifest digest (an index's)
    refused: dict[str, str]  # platform folder ("." for the image itself) -> reason


def _read_header(meta: bytes) -> Shown:
    """The header of a `.meta` (its lines before the first entry's)."""
    manifest, images, refused = "", {}, {}
    for line in meta.split(b"\n"):
        if line.startswith(b"/"):
            break
        word, _, rest = line.decode(errors="replace").partition(" ")
        if word == "manifest":
            manifest = rest
        elif word == "image":
            folder, _, digest = rest.partition(" ")
            images[folder] = digest
        elif word == "refused":
            folder, _, reason = rest.partition(" ")
            refused[folder] = reason
    return Shown(manifest, images, refused)


def _header(shown: Shown) -> bytes:
    lines = [META_TITLE, b"manifest " + shown.manifest.encode()]
    lines += [b"image %s %s" % (f.encode(), d.encode()) for f, d in sorted(shown.images.items())]
    lines += [b"refused %s %s" % (f.encode(), r.encode()) for f, r in sorted(shown.refused.items())]
    return b"\n".join(lines) + b"\n"


# --- building a repository's view ---------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """What the view reads and writes through (storage.store hands them over)."""

    gitdir: Path
    objects: DiskObjectStore
    refs: DiskRefsContainer
    cache: ObjectCache
    tip: Callable[[str], tuple[bytes | None, bytes | None]]  # repo -> image branch tip, tree
    tree_of: Callable[[bytes], bytes]  # a commit's tree
    parsed: Callable[[bytes], ParsedManifest | None]  # a manifest blob, parsed
    open_blob: Callable[[bytes, Digest], BlobReader]  # a blob at a digest's path, rebuilt (§10)
    limits: Limits = LIMITS


@dataclass
class Built:
    """What one build of a repository's view did."""

    repository: str
    commit: str | None = None  # the new commit of refs/hroot/fs/…; None when nothing changed
    built: list[str] = field(default_factory=list)  # tags whose folders were built
    kept: list[str] = field(default_factory=list)  # tags whose folders stayed
    removed: list[str] = field(default_factory=list)  # tags gone from the view
    refused: dict[str, str] = field(default_factory=dict)  # tag[/platform] -> reason
    seconds: float = 0.0


@dataclass
class TagView:
    """A tag's part of a view: its folder and its `.meta`, of the view before (a tree and
    a blob) or built now (the fast-import file commands that make the folder of
    `first_tag`, which other tags of the same image copy, and the `.meta` itself), kept
    as strings: a few bytes an entry where Python objects would take hundreds."""

    shown: Shown
    tree: bytes | None = None
    meta_blob: bytes | None = None
    first_tag: bytes = b""
    files: bytes = b""
    meta: bytes = b""


def build(parts: Parts, repo: str, only_tag: str | None = None) -> Built:
    """Bring repo's view up to its tags (with `only_tag`, build that tag alone, keeping
    the other tags' folders as they are while their images stay); no commit when nothing
    changed. A repository without a branch loses its view (NameUnknown); a missing
    `only_tag` is ManifestUnknown. Another writer moving the view meanwhile makes it
    start again from there."""
    started = time.monotonic()
    for attempt in range(1, BUILD_ATTEMPTS + 1):
        try:
            built = _build_once(parts, repo, only_tag)
            break
        except GitFailed:
            if attempt == BUILD_ATTEMPTS:
                raise
    built.seconds = time.monotonic() - started
    return built


def _build_once(parts: Parts, repo: str, only_tag: str | None) -> Built:
    ref = fs_ref(repo)
    built = Built(repo)
    view_tip = refs.read(parts.refs, ref)
    image_tip, image_tree = parts.tip(repo)
    if image_tip is None:
        remove(parts, repo)
        raise NameUnknown(repo)
    index = layout.read_index(parts.cache, image_tree)
    tags = {tag: found["digest"] for tag in index.tags() if (found := index.find(tag))}
    if only_tag is not None and only_tag not in tags:
        raise ManifestUnknown(f"{repo}:{only_tag}")
    before = tag_views(parts, view_tip)
    by_digest = {view.shown.manifest: view for view in before.values()}
    views: dict[str, TagView] = {}
    to_build: dict[str, list[str]] = {}  # manifest digest -> its tags
    for tag, digest in sorted(tags.items()):
        if tag in before and before[tag].shown.manifest == digest:
            views[tag] = before[tag]
            built.kept.append(tag)
        elif only_tag is not None and tag != only_tag:
            continue
        elif digest in by_digest:  # shown under another tag: the same folder
            views[tag] = by_digest[digest]
            built.built.append(tag)
        else:
            to_build.setdefault(digest, []).append(tag)
    building = {tag for tagged in to_build.values() for tag in tagged}
    built.removed = sorted(tag for tag in before if tag not in views and tag not in building)
    if not building and not built.built and not built.removed:
        return built
    writer = Writer(parts.gitdir, parts.objects)
    try:
        for digest, tagged in sorted(to_build.items()):
            view = _build_manifest(parts, writer, image_tree, digest, tagged[0])
            for tag in tagged:
                views[tag] = view
                for folder, reason in view.shown.refused.items():
                    built.refused[tag if folder == "." else f"{tag}/{folder}"] = reason
        built.built = sorted(built.built + list(building))
        writer.commit(ref, view_tip, _message(repo, built, image_tip), _tree_lines(views))
        writer.finish()
    except BaseException:
        writer.kill()
        raise
    built.commit = (refs.read(parts.refs, ref) or b"").decode()
    if parts.tip(repo)[0] is None:  # removed while it was built (Store.remove)
        remove(parts, repo)
    return built


def tag_views(parts: Parts, view_tip: bytes | None) -> dict[str, TagView]:
    """Each tag of a view, as its `.meta` says, with its folder's tree."""
    if view_tip is None:
        return {}
    tree = parts.tree_of(view_tip)
    metas = layout.entry(parts.cache, tree, META_FOLDER)
    found = {}
    for name, (_, oid) in parts.cache.tree(metas).items() if metas else ():
        if name.endswith(META_SUFFIX):
            folder = name.removesuffix(META_SUFFIX)
            shown = _meta_header(parts, oid)
            found[folder.decode()] = TagView(shown, layout.entry(parts.cache, tree, folder), oid)
    return found


def _meta_header(parts: Parts, meta: bytes) -> Shown:
    """What a `.meta` blob says it shows, from its header alone (a `.meta` of 500,000
    entries is tens of MB: every build reads the header of each tag's), cached by id."""

    def load() -> Shown:
        with objects.open_blob(parts.objects, meta.decode()) as blob:
            head = b""
            while b"\n/" not in head and (piece := blob.read(_HEADER_PIECE)):
                head += piece
        return _read_header(head)

    return parts.cache.get("fs-meta-header", meta, load, layout.one)


def _build_manifest(
    parts: Parts, writer: Writer, image_tree: bytes | None, digest: str, tag: str
) -> TagView:
    """The view of manifest `digest`, in the folder of `tag`: an image, or each platform's
    image of an index."""
    parsed = _manifest(parts, image_tree, digest)
    view = TagView(Shown(digest, {}, {}), first_tag=tag.encode())
    files: list[bytes] = []
    meta: list[bytes] = []
    if parsed is None:
        view.shown.refused["."] = "the manifest is not stored here or does not parse"
    elif parsed.media_type not in INDEX_TYPES:
        _build_image(parts, writer, image_tree, parsed, view, "", files, meta)
    else:
        for child in parsed.children:
            platform = child.platform
            if platform is None or platform.startswith(_FOREIGN_OS + "/"):
                continue  # attestations and the like: no filesystem
            folder = platform.replace("/", "-")
            if folder in view.shown.images:
                continue
            view.shown.images[folder] = str(child.digest)
            image = _manifest(parts, image_tree, str(child.digest))
            if image is None or image.media_type in INDEX_TYPES:
                view.shown.refused[folder] = "not an image stored here"
            else:
                _build_image(parts, writer, image_tree, image, view, folder, files, meta)
    view.files = b"".join(files)
    meta.sort()
    view.meta = _header(view.shown) + b"".join(meta)
    return view


def _build_image(
    parts: Parts,
    writer: Writer,
    image_tree: bytes | None,
    image: ParsedManifest,
    view: TagView,
    folder: str,
    files: list[bytes],
    meta: list[bytes],
) -> None:
    """One image's layers, its file commands and `.meta` lines added to `files` and
    `meta`, in `folder` of the tag's ("" for the tag's own); a refusal is noted in the
    view (the folder stays out of it), not raised."""
    rootfs = Rootfs(writer, parts.limits)
    try:
        for number, digest in enumerate(image.layers):
            oid = layout.find_blob(parts.cache, image_tree, digest)
            if oid is None:
                raise Refused(message=f"layer {digest} is not stored here")
            with parts.open_blob(oid, digest) as blob:
                try:
                    rootfs.apply(number, entries(decompressed(blob), parts.limits))
                except Refused as refused:
                    raise Refused(message=f"layer {digest}: {refused.message}") from None
    except Refused as refused:
        view.shown.refused[folder or "."] = refused.message
        return
    tree_folder = view.first_tag + (b"/" + folder.encode() if folder else b"")
    image_files, image_meta = rootfs.listing(tree_folder, folder.encode())
    files.append(image_files)
    meta += image_meta


def _manifest(parts: Parts, image_tree: bytes | None, digest: str) -> ParsedManifest | None:
    oid = layout.find_blob(parts.cache, image_tree, digests.parse(digest))
    return parts.parsed(oid) if oid is not None else None


def _tree_lines(views: dict[str, TagView]) -> Iterator[bytes]:
    """fast-import file commands of the whole view: each tag's folder and `.meta`.
    Tags come sorted, so the first tag of an image built now is written before the
    others copy its folder."""
    for tag, view in sorted(views.items()):
        folder = tag.encode()
        if view.tree is not None:
            yield b"M %s %s %s\n" % (MODE_TREE, view.tree, folder)
        elif view.first_tag == folder:
            yield view.files
        elif view.files:
            yield b"C %s %s\n" % (view.first_tag, folder)
        meta_path = META_FOLDER + b"/" + folder + META_SUFFIX
        if view.meta_blob is not None:
            yield b"M %s %s %s\n" % (MODE_FILE, view.meta_blob, meta_path)
        else:
            yield b"M %s inline %s\ndata %d\n%s\n" % (
                MODE_FILE,
                meta_path,
                len(view.meta),
                view.meta,
            )


def _message(repo: str, built: Built, image_tip: bytes) -> str:
    """First line in words, then trailers: the image commit shown, and each refusal."""
    said = []
    if built.built:
        said.append("built " + ", ".join(built.built))
    if built.removed:
        said.append("removed " + ", ".join(built.removed))
    lines = [f"fs view of {repo}: {'; '.join(said)}", ""]
    lines.append(f"{IMAGE_COMMIT}: {image_tip.decode()}")
    lines += [f"Refused: {where}: {reason}" for where, reason in sorted(built.refused.items())]
    return "\n".join(lines) + "\n"


def remove(parts: Parts, repo: str) -> None:
    """Drop repo's view, if it has one (its repository is gone)."""
    ref = fs_ref(repo)
    while (tip := refs.read(parts.refs, ref)) is not None:
        if refs.compare_and_swap(parts.refs, ref, tip, None):
            return
