"""The root filesystem that an image's layers make, and the `.meta` lines that say of it
what a git tree cannot hold (docs/format.md §9).

Layers are applied in order with OCI whiteouts, each tar streamed from its blob: every
regular file goes into git (storage.fastimport) as it comes out of the tar,
and only a few bytes per entry are kept (an image may have 500,000). What a git tree
cannot hold truthfully (an entry under a symlink, a `.git` name, a hard link to nothing)
is Refused, with one line of reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from storage.fastimport import MODE_EXEC, MODE_FILE, MODE_LINK, Writer, c_quoted
from storage.layers import OPAQUE_MARKER, WHITEOUT_PREFIX, Entry, Limits, Readable, Refused

_UNSAFE = re.compile(rb"[\x00-\x20%\x7f]")  # written %XX in a .meta
_QUOTED = re.compile(rb"%([0-9A-F]{2})")


class _Node:
    """One path of the filesystem, in as few bytes as will do (an image may have 500,000):
    `meta` is its `.meta` line after the path, None for a folder no tar entry declared;
    `kind` is what it holds (a hard link holds its target's kind); `data` names a file's
    or symlink's content: the hex id of its blob."""

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


class Rootfs:
    """The root filesystem that an image's layers make, applied one after another."""

    def __init__(self, writer: Writer, limits: Limits) -> None:
        self._writer = writer
        self._limits = limits
        self._root = _Node(None, "dir", -1)
        self._entries = 0
        self._bytes = 0

    def apply(self, layer: int, tar: Iterator[tuple[Entry, Readable | None]]) -> None:
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

    def _node(self, entry: Entry, layer: int, content: Readable | None) -> _Node:
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
                    quoted = c_quoted(tree_folder + b"/" + path)
                    files.append(b"M %s %s %s\n" % (_git_mode(node), node.data, quoted))
        return b"".join(files), meta


def _git_mode(node: _Node) -> bytes:
    if node.kind == "symlink":
        return MODE_LINK
    return MODE_EXEC if node.mode & 0o111 else MODE_FILE


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
