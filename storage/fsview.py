"""The filesystem view of a repository's tags (docs/format.md §9), built and compared.

`refs/hroot/fs/ENCODED` holds, for every tag of the repository, the image's root
filesystem as a git tree (`<tag>/`, or `<tag>/<os>-<arch>[-<variant>]/` for each platform
of an index), and under `.hroot/<tag>.meta` what a git tree cannot hold (modes,
ownership, times, hard links, devices, fifos, empty folders, xattrs), so that `git diff`
and `git log -- path` work on what is inside images.

Layers are applied in order with OCI whiteouts, streamed from their blobs straight into
one `git fast-import` per build: each regular file goes to it as it comes out of the tar
(whatever its size, memory holds one piece of it), and only a line per entry is kept.
A tag whose image was shown before (the same manifest, under any tag) keeps its folder's
tree without reading a layer. An image the view refuses (storage.layers.Refused) has no
folder; its `.meta` says why, so that it is not tried again until its tag moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dulwich.object_store import DiskObjectStore
from dulwich.refs import DiskRefsContainer

from storage import digests, layout, names, objects, refs
from storage.commits import AUTHOR
from storage.digests import Digest
from storage.errors import GitFailed, ManifestUnknown, NameUnknown
from storage.layers import (
    LIMITS,
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    Entry,
    Limits,
    Refused,
    decompressed,
    entries,
)
from storage.layout import ObjectCache
from storage.manifests import INDEX_TYPES, ParsedManifest
from storage.types import BlobReader

FS_PREFIX = b"refs/hroot/fs/"
META_FOLDER = b".hroot"
META_SUFFIX = b".meta"
META_TITLE = b"# hroot filesystem view (docs/format.md \xc2\xa79): one line per entry, by path"
IMAGE_COMMIT = "Image-Commit"
# Files up to this size are read whole and hashed before fast-import is told of them, so
# that one git has already costs no more (an image's next version shares most files).
HASHED_FIRST = 8 << 20
BUILD_ATTEMPTS = 3  # another writer (a `hroot fs build` beside a server) moved the ref
# pack.compression: the repository's 0 is for layers, compressed already; files are not,
# and zlib's fastest level keeps them nearly as small as its default, much faster (a
# 120 MB gzip layer of /usr: 110 MB of pack in 14 s, against 102 MB in 24 s, 2 busy cores).
# --big-file-threshold=1: no delta against the blob written just before, which is
# unrelated (8 s of that image); `git gc` finds the deltas between versions of a file.
FAST_IMPORT = (
    "-c",
    "pack.compression=1",
    "fast-import",
    "--big-file-threshold=1",
    "--quiet",
    "--done",
)
_TREE, _FILE, _EXEC, _LINK = b"040000", b"100644", b"100755", b"120000"
_HEADER_PIECE = 4096  # bytes of a .meta read at a time for its header
_FOREIGN_OS = "unknown"  # an index's entry for attestations, not a platform
_UNSAFE = re.compile(rb"[\x00-\x20%\x7f]")  # written %XX in a .meta
_QUOTED = re.compile(rb"%([0-9A-F]{2})")
_C_ESCAPED = re.compile(rb'[\x00-\x1f"\\\x7f]')  # escaped in a path fast-import reads


def fs_ref(name: str) -> bytes:
    return FS_PREFIX + names.encode(name)


# --- the root filesystem of one image ----------------------------------------------------


class _Node:
    """One path of the filesystem, in as few bytes as will do (an image may have 500,000):
    `meta` is its `.meta` line after the path, None for a folder no tar entry declared;
    `kind` is what it holds (a hard link holds its target's kind); `data` names a file's
    or symlink's content for fast-import: a mark, or the id of a blob git has."""

    __slots__ = ("children", "data", "kind", "layer", "meta", "mode")

    def __init__(
        self, entry: Entry | None, kind: str, layer: int, mode: int = 0o755, data: bytes = b""
    ) -> None:
        self.meta = _meta_fields(entry) if entry is not None else None
        self.kind = kind
        self.layer = layer
        self.mode = mode
        self.data = data
        self.children: dict[str, _Node] | None = {} if kind == "dir" else None


class Writer:
    """A `git fast-import` run: blobs streamed in, then one commit onto a ref.

    It writes one pack. A file up to HASHED_FIRST bytes that the repository has already
    (most files of an image's next version) is hashed here and named by its id, never
    sent: fast-import's hashing and compression are most of a build's time. fast-import
    moves the ref only if the new commit descends from where the ref is, under git's ref
    lock: a compare-and-swap.
    """

    def __init__(self, gitdir: Path, store: DiskObjectStore) -> None:
        self._store = store
        self._marks = 0
        self._process = subprocess.Popen(
            ["git", "--git-dir", str(gitdir), *FAST_IMPORT],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdin is not None
        self._stdin = self._process.stdin

    def blob(self, size: int, content: BinaryIO) -> bytes:
        """`size` bytes of `content` as a blob: its id if the repository has it already (a
        file of an image shown before: hashed here, never sent), else its mark, streamed
        in. If the content fails to come, the blob is padded out (the stream must stay
        whole) and the error raised."""
        if size <= HASHED_FIRST:
            data = content.read(size)
            if len(data) != size:
                raise Refused(message="a file's content ends early")
            return self.data(data)
        mark = self._mark(b"data %d\n" % size)
        left = size
        try:
            while left and (piece := content.read(min(left, objects.CHUNK))):
                self._write(piece)
                left -= len(piece)
            if left:
                raise Refused(message="a file's content ends early")
        finally:
            while left:
                pad = min(left, objects.CHUNK)
                self._write(bytes(pad))
                left -= pad
            self._write(b"\n")
        return mark

    def data(self, data: bytes) -> bytes:
        """A blob of `data`: its id if the repository has it already, else its mark."""
        oid = hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest().encode()
        if objects.freshen(self._store, oid):
            return oid
        mark = self._mark(b"data %d\n" % len(data))
        self._write(data + b"\n")
        return mark

    def commit(
        self, ref: bytes, parent: bytes | None, message: str, lines: Iterator[bytes]
    ) -> None:
        """A commit of the tree that `lines` (fast-import file commands) make from nothing."""
        encoded = message.encode()
        head = b"commit %s\ncommitter %s %d +0000\ndata %d\n%s\n" % (
            ref,
            AUTHOR,
            int(time.time()),
            len(encoded),
            encoded,
        )
        self._write(head + (b"from %s\n" % parent if parent else b"") + b"deleteall\n")
        for line in lines:
            self._write(line)
        self._write(b"\n")

    def finish(self) -> None:
        """Let fast-import write its pack and move the ref; GitFailed if it could not."""
        try:
            self._write(b"done\n")
            self._stdin.close()
        except GitFailed:
            pass  # it ended already: its stderr says why
        assert self._process.stderr is not None
        with self._process.stderr:
            err = self._process.stderr.read()
        if self._process.wait() != 0:
            raise GitFailed(
                message=f"git fast-import failed: {err.decode(errors='replace').strip()}"
            )

    def kill(self) -> None:
        """Stop it without a crash report: its pack stays unfinished and unnamed."""
        self._process.kill()
        self._process.wait()
        for pipe in (self._stdin, self._process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _mark(self, header: bytes) -> bytes:
        self._marks += 1
        mark = b":%d" % self._marks
        self._write(b"blob\nmark %s\n%s" % (mark, header))
        return mark

    def _write(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
        except (BrokenPipeError, ValueError):
            raise GitFailed(message="git fast-import stopped reading") from None


class Rootfs:
    """The root filesystem that an image's layers make, applied one after another."""

    def __init__(self, writer: Writer, limits: Limits) -> None:
        self._writer = writer
        self._limits = limits
        self._root = _Node(None, "dir", -1)
        self._entries = 0
        self._bytes = 0

    def apply(self, layer: int, tar: Iterator[tuple[Entry, BinaryIO | None]]) -> None:
        """Layer number `layer` (0 first) on what the ones before made; Refused for an
        entry the view cannot hold truthfully or that goes over the limits."""
        for entry, content in tar:
            self._entries += 1
            if self._entries > self._limits.entries:
                raise Refused(message=f"more than {self._limits.entries} entries")
            if not entry.path:
                if entry.kind != "dir":
                    raise Refused(message="the root is not a folder")
                self._root.meta = _meta_fields(entry)
                continue
            for part in entry.path:
                _check_git_name(entry, part)
            parent = self._folder(entry.path[:-1], layer)
            name = entry.path[-1]
            assert parent.children is not None
            if name == OPAQUE_MARKER:
                _hide_lower(parent, layer)
            elif name.startswith(WHITEOUT_PREFIX):
                hidden = parent.children.get(name.removeprefix(WHITEOUT_PREFIX))
                if hidden is not None and hidden.layer < layer:
                    del parent.children[name.removeprefix(WHITEOUT_PREFIX)]
            else:
                self._add(parent, name, self._node(entry, layer, content))

    def _node(self, entry: Entry, layer: int, content: BinaryIO | None) -> _Node:
        if entry.kind == "hardlink":
            target = self._find(tuple(entry.link.split("/")))
            if target is None or target.kind == "dir":
                raise Refused(message=f"hard link {_shown(entry)} to {entry.link!r}, no file")
            return _Node(entry, target.kind, layer, target.mode, target.data)
        data = b""
        if entry.kind == "file":
            self._bytes += entry.size
            if self._bytes > self._limits.total_bytes:
                raise Refused(message=f"more than {self._limits.total_bytes} bytes of files")
            assert content is not None
            data = self._writer.blob(entry.size, content)
        elif entry.kind == "symlink":
            data = self._writer.data(_raw(entry.link))
        return _Node(entry, entry.kind, layer, entry.mode, data)

    def _add(self, parent: _Node, name: str, node: _Node) -> None:
        assert parent.children is not None
        old = parent.children.get(name)
        if node.kind == "dir" and old is not None and old.children is not None:
            old.meta, old.layer, old.mode = node.meta, node.layer, node.mode  # merged
        else:
            parent.children[name] = node

    def _folder(self, path: tuple[str, ...], layer: int) -> _Node:
        """The folder at `path`, made (as declared by no entry) where missing; Refused
        where something else is in the way: an entry through a symlink or a file."""
        node = self._root
        for depth, name in enumerate(path):
            assert node.children is not None
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(None, "dir", layer)
            elif child.children is None:
                where = "/".join(path[: depth + 1])
                raise Refused(message=f"an entry under {where!r}, which is a {child.kind}")
            node = child
        return node

    def _find(self, path: tuple[str, ...]) -> _Node | None:
        node: _Node | None = self._root
        for name in path:
            if node is None or node.children is None:
                return None
            node = node.children.get(name)
        return node

    def listing(self, tree_folder: bytes, meta_folder: bytes) -> tuple[bytes, list[bytes]]:
        """The fast-import file commands of the files, under `tree_folder` (a tag's, or a
        platform's in it), as one string; and the `.meta` lines of every entry, their
        paths under `meta_folder` ("" for the tag's own image, else the platform's)."""
        files: list[bytes] = []
        meta: list[bytes] = []
        if self._root.meta is not None:
            meta.append(_meta_line(meta_folder, self._root.meta))
        meta_prefix = meta_folder + b"/" if meta_folder else b""
        stack: list[tuple[bytes, _Node]] = [(b"", self._root)]
        while stack:
            prefix, folder = stack.pop()
            assert folder.children is not None
            for name, node in folder.children.items():
                path = prefix + _raw(name)
                if node.meta is not None:
                    meta.append(_meta_line(meta_prefix + path, node.meta))
                if node.children is not None:
                    stack.append((path + b"/", node))
                elif node.kind in ("file", "symlink"):
                    quoted = _c_quoted(tree_folder + b"/" + path)
                    files.append(b"M %s %s %s\n" % (_git_mode(node), node.data, quoted))
        return b"".join(files), meta


def _git_mode(node: _Node) -> bytes:
    if node.kind == "symlink":
        return _LINK
    return _EXEC if node.mode & 0o111 else _FILE


def _hide_lower(folder: _Node, layer: int) -> None:
    """An opaque folder: what lower layers put in it goes; this layer's entries stay."""
    assert folder.children is not None
    for name, child in list(folder.children.items()):
        if child.children is not None:
            _hide_lower(child, layer)
            if child.layer < layer and not child.children:
                del folder.children[name]
        elif child.layer < layer:
            del folder.children[name]


def _check_git_name(entry: Entry, name: str) -> None:
    """git refuses trees with `.git` in them (git fsck --strict: hasDotgit)."""
    if name.lower() in (".git", "git~1"):
        raise Refused(message=f"entry {_shown(entry)}: git trees cannot hold a .git entry")


def _shown(entry: Entry) -> str:
    return repr("/".join(entry.path))


# --- metadata lines -----------------------------------------------------------------------


def _raw(text: str) -> bytes:
    """A tar name or value as its bytes (tarfile keeps undecodable bytes as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def quote(data: bytes) -> bytes:
    """`%`, space, control bytes and DEL as %XX: a field of a metadata line is one word."""
    return _UNSAFE.sub(lambda match: b"%%%02X" % match[0][0], data)


def unquote(data: bytes) -> bytes:
    return _QUOTED.sub(lambda match: bytes.fromhex(match[1].decode()), data)


def _meta_line(path: bytes, fields: bytes) -> bytes:
    """A `.meta` line: the path from the tag's folder (b"" its root), then `fields`."""
    return b"/" + quote(path) + b" " + fields + b"\n"


def _meta_fields(entry: Entry) -> bytes:
    """What a `.meta` line says of an entry after its path (docs/format.md §9)."""
    fields = [entry.kind.encode(), b"%04o" % entry.mode, b"%d:%d" % (entry.uid, entry.gid)]
    if entry.uname:
        fields.append(b"uname=" + quote(_raw(entry.uname)))
    if entry.gname:
        fields.append(b"gname=" + quote(_raw(entry.gname)))
    fields.append(b"mtime=%d" % entry.mtime)
    if entry.kind in ("symlink", "hardlink"):
        fields.append(b"link=" + quote(_raw(entry.link)))
    if entry.kind in ("char", "block"):
        fields.append(b"dev=%d,%d" % entry.device)
    fields += [quote(_raw(key)) + b"=" + quote(_raw(value)) for key, value in entry.pax]
    return b" ".join(fields)


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
class _TagView:
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
    before = _tag_views(parts, view_tip)
    by_digest = {view.shown.manifest: view for view in before.values()}
    views: dict[str, _TagView] = {}
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


def _tag_views(parts: Parts, view_tip: bytes | None) -> dict[str, _TagView]:
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
            found[folder.decode()] = _TagView(shown, layout.entry(parts.cache, tree, folder), oid)
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

    return parts.cache.get("fs-meta-header", meta, load, _one)


def _one(_: object) -> int:
    return 1


def _build_manifest(
    parts: Parts, writer: Writer, image_tree: bytes | None, digest: str, tag: str
) -> _TagView:
    """The view of manifest `digest`, in the folder of `tag`: an image, or each platform's
    image of an index."""
    parsed = _manifest(parts, image_tree, digest)
    view = _TagView(Shown(digest, {}, {}), first_tag=tag.encode())
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
    view: _TagView,
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


def _tree_lines(views: dict[str, _TagView]) -> Iterator[bytes]:
    """fast-import file commands of the whole view: each tag's folder and `.meta`.
    Tags come sorted, so the first tag of an image built now is written before the
    others copy its folder."""
    for tag, view in sorted(views.items()):
        folder = tag.encode()
        if view.tree is not None:
            yield b"M %s %s %s\n" % (_TREE, view.tree, folder)
        elif view.first_tag == folder:
            yield view.files
        elif view.files:
            yield b"C %s %s\n" % (view.first_tag, folder)
        meta_path = META_FOLDER + b"/" + folder + META_SUFFIX
        if view.meta_blob is not None:
            yield b"M %s %s %s\n" % (_FILE, view.meta_blob, meta_path)
        else:
            yield b"M %s inline %s\ndata %d\n%s\n" % (_FILE, meta_path, len(view.meta), view.meta)


def _c_quoted(path: bytes) -> bytes:
    """A path as fast-import reads any path: in double quotes, C escapes inside."""
    return b'"' + _C_ESCAPED.sub(lambda match: b"\\%03o" % match[0][0], path) + b'"'


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


# --- comparing two images' filesystems ----------------------------------------------------


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
    views = _tag_views(parts, view_tip)
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
