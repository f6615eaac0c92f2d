"""What a registry's git history says about its images, for `hroot log/show/diff/ls`.

Everything here only reads: commits, trees, index.json, manifests and configs, and
for uncompressed sizes the layers themselves, streamed. So it works on a repository
a running server writes to, and sees that server's commits once their refs move.
Values come back as dataclasses; printing them is the command line's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit

from storage import digests, layout, manifests, objects
from storage.commitlog import ACTIONS, BASE_IMAGE
from storage.digests import Digest
from storage.errors import ManifestUnknown, Unsupported
from storage.fsdiff import FileChange
from storage.index import TAG_ANNOTATION, Index
from storage.layers import Refused, compressed, decompressed
from storage.layout import ObjectCache
from storage.manifests import INDEX_TYPES, load_json
from storage.pushes import Pushed
from storage.types import Manifest

# `Base-Image: repo@digest`, or for one platform of an index `repo@digest (os/arch[/variant])`
_TRAILER = re.compile(r"^([A-Za-z0-9-]+): (.*)$")
_BETWEEN_PAUSES = 64  # repositories counted between two pauses of `usage`


# --- what the functions return ----------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    """An image another was built FROM, as a push commit's Base-Image trailer names it."""

    repository: str
    digest: str
    platform: str | None  # the platform of an index it is the base of, if one


@dataclass(frozen=True)
class TagChange:
    """A tag a commit added (old None), moved, or removed (new None)."""

    tag: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Child:
    """One manifest an index lists."""

    digest: str
    media_type: str
    platform: str | None
    size: int | None  # its config and layers; None when the repository lacks it


@dataclass(frozen=True)
class Summary:
    """A manifest in a few words: what `hroot log` says of the image a commit names."""

    digest: str
    media_type: str
    size: int  # config and layers; for an index, those of every child it holds
    platforms: list[str]


@dataclass(frozen=True)
class LogEntry:
    """One commit of a repository's own (first-parent) history."""

    commit: str
    time: datetime
    action: str  # push, delete, create, or commit for one hroot did not write
    summary: str  # the message's first line
    tags: list[TagChange]
    image: Summary | None  # the manifest its Manifest-Digest trailer names
    bases: list[BaseImage]


@dataclass(frozen=True)
class ConfigSummary:
    """The parts of an image config that say how the image runs."""

    platform: str | None
    created: str | None
    entrypoint: list[str] | None
    cmd: list[str] | None
    env: list[str]
    user: str | None
    working_dir: str | None
    exposed_ports: list[str]
    labels: dict[str, str]


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    uncompressed_size: int | None  # None when not measured, or not stored here
    shared_with: list[str]  # other repositories whose tip holds this layer


@dataclass(frozen=True)
class Image:
    """One manifest of a repository, in detail: what `hroot show` prints."""

    repository: str
    reference: str  # as asked: a tag or a digest
    digest: str
    media_type: str
    manifest_size: int
    size: int  # config and layers; for an index, those of every child it holds
    platforms: list[str]
    tags: list[str]
    config_digest: str | None
    config: ConfigSummary | None  # None for an index, or a config that is not JSON
    layers: list[Layer]
    children: list[Child]  # of an index
    pushed: Pushed | None  # None when no commit within the branch's history pushed it
    bases: list[BaseImage]


@dataclass(frozen=True)
class ImageName:
    repository: str
    reference: str
    digest: str


@dataclass(frozen=True)
class LayerSize:
    digest: str
    size: int


@dataclass(frozen=True)
class LayersDiff:
    """By digest, in image order (removed ones in the old image's order)."""

    added: list[LayerSize]
    removed: list[LayerSize]
    kept: list[LayerSize]


@dataclass(frozen=True)
class Change:
    old: Any
    new: Any


@dataclass(frozen=True)
class ListDiff:
    added: list[str]
    removed: list[str]


@dataclass(frozen=True)
class LabelsDiff:
    added: dict[str, str]
    removed: dict[str, str]
    changed: dict[str, Change]


@dataclass(frozen=True)
class ConfigDiff:
    changed: dict[str, Change]  # entrypoint, cmd, user, working_dir, platform: those that differ
    env: ListDiff
    exposed_ports: ListDiff
    labels: LabelsDiff


@dataclass(frozen=True)
class SizeDiff:
    old: int
    new: int
    change: int


@dataclass(frozen=True)
class ImageDiff:
    """Two images compared. Each section is a field of its own, so a later one (the
    files of the two filesystems) is one more field, not a change to these."""

    old: ImageName
    new: ImageName
    layers: LayersDiff
    config: ConfigDiff
    size: SizeDiff
    files: list[FileChange] | None = None  # when the views of both show them (storage.fsdiff)


@dataclass(frozen=True)
class RepositoryUsage:
    """A repository's tip: how many tags, manifests and blobs, and their bytes."""

    repository: str
    tags: int
    manifests: int
    blobs: int
    size: int
    unique: int  # bytes of blobs no other repository's tip holds
    shared: int  # bytes of blobs some other repository's tip holds too


@dataclass(frozen=True)
class Usage:
    repositories: list[RepositoryUsage]
    blobs: int  # distinct blobs of every tip
    size: int  # their bytes, each blob once: what the tips take in git at least


@dataclass(frozen=True)
class _Stored:
    """A manifest as a layout holds it: its descriptor's facts and its parsed JSON."""

    digest: str
    media_type: str
    body_size: int
    document: dict[str, Any]

    @classmethod
    def of(cls, manifest: Manifest) -> _Stored:
        return cls(
            manifest.digest,
            manifest.media_type,
            len(manifest.body),
            _json_object(manifest.body) or {},
        )

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def config(self) -> dict[str, Any] | None:
        config = self.document.get("config")
        return config if isinstance(config, dict) else None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return _descriptors(self.document, "layers")

    @property
    def children(self) -> list[dict[str, Any]]:
        return _descriptors(self.document, "manifests")

    def own_size(self) -> int:
        """Bytes of its config and layers (0 for an index: its children hold them)."""
        config = self.config
        parts = ([config] if config else []) + self.layers
        return sum(_size_of(d) for d in parts)


# --- reading --------------------------------------------------------------------------------


Tip = Callable[..., tuple[bytes | None, bytes | None]]  # (repo, must_exist) -> (commit, tree)


@dataclass(frozen=True)
class Reads:
    """What History reads through: the store's caches, objects and refs (storage.store
    hands them over, so that this module need not know the store)."""

    cache: ObjectCache
    objects: DiskObjectStore
    tip: Tip
    repositories: Callable[[], list[str]]
    get_manifest: Callable[[str, str], Manifest]
    size: Callable[[bytes, Digest], int]  # of blob oid at digest's path
    size_ahead: Callable[[list[tuple[bytes, Digest]]], None]  # many at once, for `size`
    pushed: Callable[[str, bytes, str], Pushed | None]  # (repo, tip, digest): storage.pushes
    holders: Callable[[list[Digest], list[str]], dict[Digest, list[str]]]  # storage.holders


class History:
    """Reads for the `hroot` commands, through a store's caches and refs."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._cache = reads.cache
        self._objects = reads.objects

    # log
    def log(self, repo: str, limit: int | None = None) -> Iterator[LogEntry]:
        """repo's own history, newest first, read one commit at a time (so `limit`
        commits of a branch 10,000 long cost `limit` commits); NameUnknown if no branch."""
        tip, _ = self._reads.tip(repo, must_exist=True)
        assert tip is not None
        return self._entries(tip, limit)

    def _entries(self, tip: bytes, limit: int | None) -> Iterator[LogEntry]:
        for count, (oid, commit) in enumerate(self._first_parents(tip)):
            if limit is not None and count >= limit:
                return
            yield self._entry(oid, commit)

    def _entry(self, oid: bytes, commit: Commit) -> LogEntry:
        parent_tree = self._objects[commit.parents[0]].tree if commit.parents else None
        summary, trailers = _message(commit)
        digest = next((v for k, v in trailers if k == "Manifest-Digest"), None)
        image = None
        if digest is not None:  # a delete names what its parent still holds
            media_type = next((v for k, v in trailers if k == "Media-Type"), "")
            stored = self._stored(commit.tree, digest, media_type) or self._stored(
                parent_tree, digest, media_type
            )
            image = self._summary(commit.tree, stored) if stored else None
        action = summary.split(" ", 1)[0]
        return LogEntry(
            commit=oid.decode(),
            time=_time(commit),
            action=action if action in ACTIONS else "commit",
            summary=summary,
            tags=self._tag_changes(parent_tree, commit.tree),
            image=image,
            bases=_bases(trailers),
        )

    def _first_parents(self, tip: bytes) -> Iterator[tuple[bytes, Commit]]:
        oid: bytes | None = tip
        while oid is not None:
            commit = self._objects[oid]
            yield oid, commit
            oid = commit.parents[0] if commit.parents else None

    def _tag_changes(self, before: bytes | None, after: bytes) -> list[TagChange]:
        """The tags that differ between two layouts' index.json.

        hroot writes one descriptor a line (docs/format.md §3), so only the lines that
        differ are parsed: 10,000 tags would otherwise be parsed twice per commit. An
        index.json of another shape (format 1, or written by another tool) is compared
        whole.
        """
        before_oid = layout.entry(self._cache, before, b"index.json")
        after_oid = layout.entry(self._cache, after, b"index.json")
        if before_oid == after_oid:
            return []
        old_lines = set(self._cache.raw(before_oid).splitlines()) if before_oid else set()
        new_lines = set(self._cache.raw(after_oid).splitlines()) if after_oid else set()
        old = _line_tags(old_lines - new_lines)
        new = _line_tags(new_lines - old_lines)
        if old is None or new is None:
            old = _tag_digests(layout.read_index(self._cache, before))
            new = _tag_digests(layout.read_index(self._cache, after))
        return [
            TagChange(tag, old.get(tag), new.get(tag))
            for tag in sorted(old.keys() | new.keys())
            if old.get(tag) != new.get(tag)
        ]

    def _summary(self, tree: bytes | None, stored: _Stored) -> Summary:
        if stored.is_index:
            children = self._children(tree, stored)
            return Summary(
                stored.digest,
                stored.media_type,
                sum(c.size or 0 for c in children),
                [c.platform for c in children if c.platform],
            )
        config = self._config_summary(tree, stored)
        platforms = [config.platform] if config and config.platform else []
        return Summary(stored.digest, stored.media_type, stored.own_size(), platforms)

    def summary(self, repo: str, reference: str) -> Summary:
        """Manifest `reference` (a tag or digest) of repo in brief: what `hroot log` says of
        the image a commit names, and a page's row of a tag."""
        _, tree = self._reads.tip(repo, must_exist=True)
        return self._summary(tree, _Stored.of(self._reads.get_manifest(repo, reference)))

    # show
    def image(
        self, repo: str, reference: str, platform: str | None = None, inspect_layers: bool = True
    ) -> Image:
        """The manifest `reference` (a tag or digest) names in repo, or with `platform`
        the child of that index for it. `inspect_layers` reads every layer (uncompressed
        sizes) and every other repository's tip (sharing); without, neither is read."""
        try:
            manifest = self._reads.get_manifest(repo, reference)
        except ManifestUnknown:
            sep = "@" if ":" in reference else ":"
            raise ManifestUnknown(f"{repo}{sep}{reference}") from None
        tip, tree = self._reads.tip(repo, must_exist=True)
        stored = _Stored.of(manifest)
        if platform is not None:
            stored = self._child_for(tree, stored, platform)
        config = None if stored.is_index else self._config_summary(tree, stored)
        children = self._children(tree, stored) if stored.is_index else []
        shared = self._shared(repo, stored.layers) if inspect_layers else {}
        layers = [self._layer(tree, d, inspect_layers, shared) for d in stored.layers]
        pushed = self._reads.pushed(repo, tip, stored.digest) if tip is not None else None
        return Image(
            repository=repo,
            reference=reference,
            digest=stored.digest,
            media_type=stored.media_type,
            manifest_size=stored.body_size,
            size=sum(c.size or 0 for c in children) if stored.is_index else stored.own_size(),
            platforms=(
                [c.platform for c in children if c.platform]
                if stored.is_index
                else [config.platform]
                if config and config.platform
                else []
            ),
            tags=layout.read_index(self._cache, tree).tags_of(stored.digest),
            config_digest=stored.config.get("digest") if stored.config else None,
            config=config,
            layers=layers,
            children=children,
            pushed=pushed,
            bases=_bases(_message(self._objects[pushed.commit.encode()])[1]) if pushed else [],
        )

    def _child_for(self, tree: bytes | None, stored: _Stored, platform: str) -> _Stored:
        """The child of index `stored` for `platform`; an image must be of that platform."""
        if stored.is_index:
            children = self._children(tree, stored)
            offered = [c.platform or "unknown" for c in children]
        else:
            config = self._config_summary(tree, stored)
            offered = [config.platform if config and config.platform else "unknown"]
            if offered == [platform]:
                return stored
            children = []
        for child in children:
            found = self._stored(tree, child.digest, child.media_type)
            if child.platform == platform and found is not None:
                return found
        raise ManifestUnknown(
            message=f"{stored.digest} has no image for {platform}: it has {', '.join(offered)}"
        )

    def _layer(
        self,
        tree: bytes | None,
        descriptor: dict[str, Any],
        inspect: bool,
        shared: dict[Digest, list[str]],
    ) -> Layer:
        digest = str(descriptor.get("digest"))
        parsed = digests.parse_or_none(digest)
        oid = layout.find_blob(self._cache, tree, parsed) if parsed else None
        return Layer(
            digest=digest,
            media_type=str(descriptor.get("mediaType")),
            size=_size_of(descriptor),
            uncompressed_size=self._uncompressed_size(oid, parsed)
            if inspect and oid and parsed
            else None,
            shared_with=shared.get(parsed, []) if parsed else [],
        )

    def _shared(self, repo: str, layers: list[dict[str, Any]]) -> dict[Digest, list[str]]:
        """Each layer's digest -> the other repositories whose tip tree holds it."""
        wanted = [digests.parse_or_none(str(d.get("digest"))) for d in layers]
        others = [name for name in self._reads.repositories() if name != repo]
        return self._reads.holders([d for d in wanted if d is not None], others)

    def _uncompressed_size(self, oid: bytes, digest: Digest) -> int | None:
        """Bytes of a layer once gzip or zstd is undone (a plain tar's own size, also of
        one stored as files), counted as it streams: memory stays flat however big the
        layer. None if it does not decompress."""
        pointer = self._cache.pointer(oid, digest)
        if pointer is not None:
            return pointer.size
        with objects.open_blob(self._objects, oid.decode()) as peek:
            if not compressed(bytes(peek.read(4))):
                return peek.size
        with objects.open_blob(self._objects, oid.decode()) as blob:
            reader = decompressed(blob)
            total = 0
            try:
                while chunk := reader.read(objects.CHUNK):
                    total += len(chunk)
            except Refused:
                return None
            return total

    # ls
    def usage(self, pause: Callable[[], None]) -> Usage:
        """Every repository's tip: its counts and bytes, unique and shared; `pause` is
        called every few repositories (storage.Store.usage)."""
        tips: dict[str, bytes | None] = {}
        held: dict[str, dict[Digest, bytes]] = {}
        for number, name in enumerate(self._reads.repositories()):
            if number % _BETWEEN_PAUSES == 0:
                pause()
            tips[name] = tree = self._reads.tip(name)[1]
            held[name] = layout.blobs(self._cache, tree)
        holders: dict[Digest, int] = {}
        for blobs in held.values():
            for digest in blobs:
                holders[digest] = holders.get(digest, 0) + 1
        self._reads.size_ahead([(oid, d) for blobs in held.values() for d, oid in blobs.items()])
        sizes: dict[Digest, int] = {}
        found = []
        for number, (name, tree) in enumerate(tips.items()):
            if number % _BETWEEN_PAUSES == 0:
                pause()
            index = layout.read_index(self._cache, tree)
            for digest, oid in held[name].items():
                sizes[digest] = self._reads.size(oid, digest)
            total = sum(sizes[d] for d in held[name])
            unique = sum(sizes[d] for d in held[name] if holders[d] == 1)
            found.append(
                RepositoryUsage(
                    name,
                    len(index.tags()),
                    len(index.manifests()),
                    len(held[name]),
                    total,
                    unique,
                    total - unique,
                )
            )
        return Usage(found, len(sizes), sum(sizes.values()))

    # reading manifests and configs
    def _stored(self, tree: bytes | None, digest: str, media_type: str = "") -> _Stored | None:
        """Manifest `digest` if the layout holds it (`media_type`: what a descriptor of it
        says, for a manifest that does not say it itself)."""
        parsed = digests.parse_or_none(digest)
        oid = layout.find_blob(self._cache, tree, parsed) if parsed else None
        body = self._cache.raw(oid) if oid else b""
        document = _json_object(body)
        if document is None:
            return None
        return _Stored(digest, str(document.get("mediaType") or media_type), len(body), document)

    def _children(self, tree: bytes | None, index: _Stored) -> list[Child]:
        children = []
        for descriptor in index.children:
            digest = str(descriptor.get("digest"))
            stored = self._stored(tree, digest, str(descriptor.get("mediaType")))
            children.append(
                Child(
                    digest=digest,
                    media_type=str(descriptor.get("mediaType")),
                    platform=manifests.platform(descriptor.get("platform")),
                    size=stored.own_size() if stored else None,
                )
            )
        return children

    def _config_summary(self, tree: bytes | None, image: _Stored) -> ConfigSummary | None:
        config = image.config
        parsed = digests.parse_or_none(str(config.get("digest"))) if config else None
        oid = layout.find_blob(self._cache, tree, parsed) if parsed else None
        document = _json_object(self._cache.raw(oid)) if oid else None
        if document is None:
            return None
        run = document.get("config") if isinstance(document.get("config"), dict) else {}
        return ConfigSummary(
            platform=manifests.platform(document),
            created=_text(document.get("created")),
            entrypoint=_strings(run.get("Entrypoint")),
            cmd=_strings(run.get("Cmd")),
            env=_strings(run.get("Env")) or [],
            user=_text(run.get("User")) or None,
            working_dir=_text(run.get("WorkingDir")) or None,
            exposed_ports=sorted(run.get("ExposedPorts") or {}),
            labels={str(k): str(v) for k, v in (run.get("Labels") or {}).items()},
        )


# --- comparing ------------------------------------------------------------------------------


def diff(old: Image, new: Image) -> ImageDiff:
    """How image `new` differs from `old`: layers, config, size."""
    for image in (old, new):
        if image.children:
            raise Unsupported(
                message=f"{image.repository}@{image.digest} is a multi-platform index: "
                f"choose one of its platforms ({', '.join(image.platforms)})"
            )
    old_digests = {layer.digest for layer in old.layers}
    new_digests = {layer.digest for layer in new.layers}
    return ImageDiff(
        old=ImageName(old.repository, old.reference, old.digest),
        new=ImageName(new.repository, new.reference, new.digest),
        layers=LayersDiff(
            added=_layer_sizes(new.layers, lambda d: d not in old_digests),
            removed=_layer_sizes(old.layers, lambda d: d not in new_digests),
            kept=_layer_sizes(new.layers, lambda d: d in old_digests),
        ),
        config=_config_diff(old.config or _NO_CONFIG, new.config or _NO_CONFIG),
        size=SizeDiff(old.size, new.size, new.size - old.size),
    )


_NO_CONFIG = ConfigSummary(None, None, None, None, [], None, None, [], {})
_SCALARS = ("entrypoint", "cmd", "user", "working_dir", "platform")


def _config_diff(old: ConfigSummary, new: ConfigSummary) -> ConfigDiff:
    changed = {
        name: Change(getattr(old, name), getattr(new, name))
        for name in _SCALARS
        if getattr(old, name) != getattr(new, name)
    }
    return ConfigDiff(
        changed=changed,
        env=_list_diff(old.env, new.env),
        exposed_ports=_list_diff(old.exposed_ports, new.exposed_ports),
        labels=LabelsDiff(
            added={k: v for k, v in new.labels.items() if k not in old.labels},
            removed={k: v for k, v in old.labels.items() if k not in new.labels},
            changed={
                k: Change(old.labels[k], v)
                for k, v in new.labels.items()
                if k in old.labels and old.labels[k] != v
            },
        ),
    )


def _list_diff(old: list[str], new: list[str]) -> ListDiff:
    return ListDiff([x for x in new if x not in old], [x for x in old if x not in new])


def _layer_sizes(layers: list[Layer], keep: Any) -> list[LayerSize]:
    """The layers whose digest `keep` accepts, each digest once, in order."""
    seen: dict[str, LayerSize] = {}
    for layer in layers:
        if keep(layer.digest):
            seen.setdefault(layer.digest, LayerSize(layer.digest, layer.size))
    return list(seen.values())


# --- small readers --------------------------------------------------------------------------


def _message(commit: Commit) -> tuple[str, list[tuple[str, str]]]:
    """A commit message's first line and its trailers (`Key: value` lines after it)."""
    lines = commit.message.decode(errors="replace").splitlines()
    trailers = [
        (match.group(1), match.group(2))
        for line in lines[1:]
        if (match := _TRAILER.match(line)) is not None
    ]
    return (lines[0] if lines else ""), trailers


def _bases(trailers: list[tuple[str, str]]) -> list[BaseImage]:
    found = []
    for key, value in trailers:
        match = BASE_IMAGE.match(value) if key == "Base-Image" else None
        if match is not None:
            found.append(BaseImage(match.group(1), match.group(2), match.group(3)))
    return found


def _time(commit: Commit) -> datetime:
    return datetime.fromtimestamp(commit.commit_time, UTC)


def _tag_digests(index: Index) -> dict[str, str]:
    return {tag: found["digest"] for tag in index.tags() if (found := index.find(tag))}


def _line_tags(lines: set[bytes]) -> dict[str, str] | None:
    """Tag -> digest of index.json lines that are each one descriptor; None if one is not."""
    found: dict[str, str] = {}
    for line in lines:
        descriptor = _json_object(line.strip().strip(b","))
        if descriptor is None or not isinstance(descriptor.get("digest"), str):
            return None
        tag = (descriptor.get("annotations") or {}).get(TAG_ANNOTATION)
        if tag is not None:
            found[tag] = descriptor["digest"]
    return found


def _size_of(descriptor: dict[str, Any]) -> int:
    size = descriptor.get("size")
    return size if isinstance(size, int) else 0


def _descriptors(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = document.get(key)
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = load_json(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None
