"""Images in and out of the store as files: `docker save` archives, OCI archives, OCI layouts.

An import goes through the calls a push makes (put_blobs, then put_manifest for each
child and then the image), so its commits, trailers, lineage and deduplication are a
push's. Everything an image needs is checked before anything is written, and its blobs
are staged only once every one matched its digest: a bad archive moves no ref.

An OCI layout's manifests are stored byte for byte (the digests `skopeo copy oci:…` gives);
a `docker save` archive of the classic kind (manifest.json only) gets a docker v2 schema 2
manifest of its uncompressed layers, built here. One that also carries an OCI layout
(docker 25 and later) is read as that layout.

Blobs are streamed both ways, a chunk at a time: memory stays flat for any layer size.
"""

from __future__ import annotations

import io
import json
import platform as host
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

from storage import digests, manifests, names, objects
from storage.digests import Digest
from storage.errors import BlobUnknown, ManifestUnknown, NameUnknown, StoreError
from storage.manifests import ParsedManifest, Reference, load_json
from storage.repository import describe
from storage.store import Store
from storage.types import BlobReader

FORMATS = ("oci-archive", "docker-archive")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"  # the whole reference: docker save, ctr export
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # what docker save holds
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_IMAGE_CONFIGS = (DOCKER_CONFIG, "application/vnd.oci.image.config.v1+json")
JSON_LIMIT = 16 << 20  # index.json, manifest.json and image configs are read whole
_LINK_HOPS = 16
# platform.machine() -> GOARCH, the names image platforms use
_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm/v7",
    "armv6l": "arm/v6",
    "i386": "386",
    "i686": "386",
}

# Told (bytes done, bytes in all) as blobs are copied: a progress bar's feed.
Progress = Callable[[int, int], None]


class ArchiveError(StoreError):
    """An archive or layout that cannot be imported, or an image that cannot be exported."""

    code = "ARCHIVE_INVALID"
    message = "invalid image archive"


@dataclass(frozen=True)
class Image:
    """An image imported or exported: where it is in the store, and its manifest's digest."""

    name: str
    tag: str
    digest: str
    media_type: str


# --- import -----------------------------------------------------------------------------


def import_images(
    store: Store, path: Path, name: str | None = None, progress: Progress | None = None
) -> list[Image]:
    """Import every image of a `docker save` or OCI archive, or of an OCI layout folder.

    `name` is `NAME:TAG` (for an archive of one image) or `NAME` (every image keeps its
    tags); without it the names come from the archive. Each image is one push: its
    blobs, the children of an index, then the manifest under its tag.
    """
    with _open_source(path) as source:
        if source.size("index.json") is not None:
            entries = _read_layout(source)
        elif source.size("manifest.json") is not None:
            entries = _read_docker_save(source)
        else:
            raise ArchiveError(
                message=f"{path}: neither an OCI layout (index.json) "
                "nor a docker save archive (manifest.json)"
            )
        targets = _targets(entries, name)
        meter = _Meter(progress, sum(e.blob_bytes() for e, _, _ in targets))
        return [_push(store, source, entry, repo, tag, meter) for entry, repo, tag in targets]


@dataclass
class _Document:
    """A manifest or index of an archive, read and checked."""

    digest: str
    media_type: str
    body: bytes


@dataclass
class _Entry:
    """One image of an archive, checked: its manifests (the children of an index before
    it, the image itself last), the blobs they need, and the names the archive gives it."""

    manifests: list[_Document]
    blobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # digest: (path, size)
    refs: list[tuple[str | None, str | None]] = field(default_factory=list)  # (name, tag)

    @property
    def root(self) -> _Document:
        return self.manifests[-1]

    def blob_bytes(self) -> int:
        return sum(size for _, size in self.blobs.values())


def _push(
    store: Store, source: _Source, entry: _Entry, repo: str, tag: str, meter: _Meter
) -> Image:
    """Put one image as a push does: the blobs the repository lacks, children, manifest."""
    where = f"{repo}:{tag}"
    try:
        missing = [(d, p, s) for d, (p, s) in entry.blobs.items() if not _has_blob(store, repo, d)]
        meter.advance(entry.blob_bytes() - sum(size for _, _, size in missing))
        store.put_blobs(repo, _streams(source, missing, meter))
        for child in entry.manifests[:-1]:
            store.put_manifest(repo, child.digest, child.body, child.media_type)
        root = entry.root
        pushed = store.put_manifest(repo, tag, root.body, root.media_type)
    except StoreError as e:
        raise ArchiveError(message=f"cannot import {where}: {describe(e)}") from None
    except tarfile.TarError as e:
        raise ArchiveError(message=f"cannot import {where}: broken archive ({e})") from None
    return Image(repo, tag, pushed.digest, pushed.media_type)


def _has_blob(store: Store, repo: str, digest: str) -> bool:
    """What a client's `HEAD blob` asks before it uploads."""
    try:
        store.stat_blob(repo, digest)
    except BlobUnknown:
        return False
    return True


def _streams(
    source: _Source, blobs: list[tuple[str, str, int]], meter: _Meter
) -> Iterator[tuple[str, BinaryIO, int]]:
    """Each blob's stream in turn, open only while it is read."""
    for digest, path, size in blobs:
        with source.open(path) as stream:
            yield digest, cast(BinaryIO, _Metered(stream, meter)), size


def _read_layout(source: _Source) -> list[_Entry]:
    """The images index.json lists, one entry per manifest, with each of its names."""
    body = _read_small(source, "index.json", JSON_LIMIT, "index.json")
    index = _parse(_Document("index.json", manifests.OCI_INDEX, body))
    listed = json.loads(body)["manifests"]  # each a descriptor, as parse checked

    read = partial(_read_manifest, source)

    def blob_size(blob: Reference, of: _Document) -> int | None:
        path = _blob_path(blob.digest)
        size = source.size(path)
        if size is None and blob.digest == manifests.EMPTY_CONFIG_DIGEST:
            return None  # the store supplies the empty config, as it does for a push
        _check_size(path, size, blob.size, f"blob {blob.digest} of {of.digest}")
        return size

    entries: dict[str, _Entry] = {}
    for child, descriptor in zip(index.children, listed, strict=True):
        entry = entries.get(str(child.digest))
        if entry is None:
            entry = entries[str(child.digest)] = _Entry([])
            _gather(entry, read(child), read, blob_size)
        annotations = descriptor.get("annotations")
        ref = _layout_ref(annotations if isinstance(annotations, dict) else {})
        if ref != (None, None):
            entry.refs.append(ref)
    return list(entries.values())


def _gather(
    entry: _Entry,
    document: _Document,
    read: Callable[[Reference], _Document],
    blob_size: Callable[[Reference, _Document], int | None],
) -> None:
    """Add a manifest to entry after its children (the order a push takes), with the
    blobs it needs: `blob_size` says how big each is, or None for one to leave out."""
    parsed = _parse(document)
    for child in parsed.children:
        _gather(entry, read(child), read, blob_size)
    for blob in parsed.blobs:
        size = blob_size(blob, document)
        if size is not None:
            entry.blobs[str(blob.digest)] = (_blob_path(blob.digest), size)
    if all(d.digest != document.digest for d in entry.manifests):
        entry.manifests.append(document)


def _read_manifest(source: _Source, descriptor: Reference) -> _Document:
    """A descriptor's manifest from blobs/, checked against its digest and size."""
    digest, path = descriptor.digest, _blob_path(descriptor.digest)
    body = _read_small(source, path, manifests.MAX_MANIFEST_SIZE, f"manifest {digest}")
    if digests.of(body, digest.algorithm) != digest:
        raise ArchiveError(message=f"{path} does not match its digest {digest}")
    _check_size(path, len(body), descriptor.size, f"manifest {digest}")
    return _Document(str(digest), descriptor.media_type, body)


def _parse(document: _Document) -> ParsedManifest:
    try:
        return manifests.parse(document.body, document.media_type, max_size=len(document.body))
    except StoreError as e:
        raise ArchiveError(message=f"{document.digest}: {describe(e)}") from None


def _layout_ref(annotations: dict[str, Any]) -> tuple[str | None, str | None]:
    """(name, tag) from a layout's annotations: a whole reference (containerd's, or a
    ref.name that holds one) names the repository; a bare ref.name is only a tag."""
    for key in (CONTAINERD_NAME, REF_NAME):
        text = annotations.get(key)
        if isinstance(text, str) and text:
            name, tag = split_reference(text)
            if key == CONTAINERD_NAME or "/" in text or tag is not None:
                return _strip_host(name), tag
            return None, text
    return None, None


def _read_docker_save(source: _Source) -> list[_Entry]:
    """The images of a classic `docker save` archive, each with a docker v2 schema 2
    manifest of its layers as they are in the archive (uncompressed tars)."""
    listed = _read_json(source, "manifest.json", list)
    entries = []
    for n, item in enumerate(listed):
        where = f"manifest.json[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(message=f"{where} has no Config")
        layer_paths = item.get("Layers")
        if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
            raise ArchiveError(message=f"{where}: Layers is not a list of paths")
        config_path = _clean(item["Config"])
        config = _read_small(source, config_path, JSON_LIMIT, f"config of {where}")
        diff_ids = _diff_ids(config, len(layer_paths), config_path)
        config_digest = str(digests.of(config))
        entry = _Entry([], {config_digest: (config_path, len(config))})
        layers = []
        for layer_path, diff_id in zip(layer_paths, diff_ids, strict=True):
            path = _clean(layer_path)
            size = source.size(path)
            if size is None:
                raise ArchiveError(message=f"{path} (a layer of {where}) is missing")
            entry.blobs.setdefault(diff_id, (path, size))
            layers.append({"mediaType": DOCKER_LAYER, "size": size, "digest": diff_id})
        document = {
            "schemaVersion": 2,
            "mediaType": manifests.DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": layers,
        }
        body = json.dumps(document, indent=3).encode()  # laid out as docker's own
        entry.manifests.append(_Document(str(digests.of(body)), manifests.DOCKER_MANIFEST, body))
        tags = item.get("RepoTags") or []
        for text in tags if isinstance(tags, list) else []:
            name, tag = split_reference(str(text))
            entry.refs.append((_strip_host(name), tag))
        entries.append(entry)
    return entries


def _diff_ids(config: bytes, layers: int, where: str) -> list[str]:
    """The digests of the uncompressed layers, which are the layers of a docker save."""
    try:
        rootfs = json.loads(config).get("rootfs") or {}
        found = [str(digests.parse(d)) for d in rootfs.get("diff_ids") or []]
    except (ValueError, AttributeError, StoreError):
        raise ArchiveError(message=f"{where}: not an image config with rootfs.diff_ids") from None
    if len(found) != layers:
        raise ArchiveError(message=f"{where}: {len(found)} diff_ids for {layers} layers")
    return found


def _targets(entries: list[_Entry], option: str | None) -> list[tuple[_Entry, str, str]]:
    """Where each image goes: (image, repository, tag), from --name or from the archive."""
    if not entries:
        raise ArchiveError(message="the archive holds no image")
    found: list[tuple[_Entry, str, str]] = []
    name, tag = split_reference(option) if option is not None else (None, None)
    if name is not None and tag is not None:
        if len(entries) > 1:
            raise ArchiveError(
                message=f"the archive holds {len(entries)} images and --name NAME:TAG "
                "names one: give --name NAME to import each under its own tags"
            )
        found.append((entries[0], name, tag))
    elif name is not None:  # one repository, the tags the archive gives
        for entry in entries:
            tags = [t for _, t in entry.refs] or [None]
            found.extend((entry, name, t or "latest") for t in tags)
    else:
        for entry in entries:
            named = [(n, t or "latest") for n, t in entry.refs if n is not None]
            if not named:
                raise ArchiveError(
                    message=f"the archive does not name image {entry.root.digest}: "
                    "give --name NAME[:TAG]"
                )
            found.extend((entry, n, t) for n, t in named)
    unique = {(repo, to): (entry, repo, to) for entry, repo, to in found}
    for repo, to in unique:
        try:
            names.check_name(repo)
            names.check_tag(to)
        except StoreError as e:
            raise ArchiveError(message=f"cannot import as {repo}:{to}: {describe(e)}") from None
    return list(unique.values())


def split_reference(text: str) -> tuple[str, str | None]:
    """`name:tag` -> (name, tag); `host:port/name` has no tag; a `@digest` is dropped."""
    text = text.split("@", 1)[0]
    name, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:
        return text, None
    return name, tag


def _strip_host(name: str) -> str:
    """`127.0.0.1:5000/app` -> `app`: a first part with `.` or `:`, or `localhost`, is a
    registry's address (docker's rule), not part of the repository name."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return rest
    return name


# --- export -----------------------------------------------------------------------------


def export_image(
    store: Store,
    name: str,
    tag: str,
    out: IO[bytes],
    format: str = "oci-archive",
    platform: str | None = None,
    progress: Progress | None = None,
) -> Image:
    """Write image `name:tag` as a tar to `out`: an OCI archive (`skopeo … oci-archive:`)
    or a docker archive (`docker load`).

    A docker archive holds one platform: `platform` (`os/arch[/variant]`), else this
    machine's. An OCI archive holds a whole index, or with `platform` that child alone.
    """
    if format not in FORMATS:
        raise ArchiveError(message=f"unknown format {format!r}: one of {', '.join(FORMATS)}")
    try:
        manifest = store.get_manifest(name, tag)
    except (NameUnknown, ManifestUnknown):
        raise ArchiveError(message=f"no image {name}:{tag} in the registry") from None
    root = _Document(manifest.digest, manifest.media_type, manifest.body)
    if format == "docker-archive" or platform is not None:
        root = _for_platform(store, name, root, platform or machine_platform())

    def read(child: Reference) -> _Document:
        stored = store.get_manifest(name, str(child.digest))
        return _Document(stored.digest, stored.media_type, stored.body)

    tree = _Entry([])
    _gather(tree, root, read, lambda blob, _: blob.size)
    meter = _Meter(progress, tree.blob_bytes())
    with tarfile.open(
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=objects.CHUNK
    ) as tar:
        if format == "oci-archive":
            _write_oci(tar, store, name, tag, tree, meter)
        else:
            _write_docker(tar, store, name, tag, tree, meter)
    return Image(name, tag, root.digest, root.media_type)


def machine_platform() -> str:
    """`linux/<this machine's architecture>`: what `docker run` would pick here."""
    machine = host.machine().lower()
    return f"linux/{_ARCHITECTURES.get(machine, machine)}"


def _for_platform(store: Store, name: str, index: _Document, wanted: str) -> _Document:
    """The child of an index for `wanted`; an image that is no index is taken as it is."""
    if index.media_type not in manifests.INDEX_TYPES:
        return index
    offered = []
    for child in json.loads(index.body).get("manifests") or []:
        found = manifests.platform(child.get("platform"))
        offered.append(found or "unknown")
        if found == wanted or (found or "").startswith(wanted + "/"):
            stored = store.get_manifest(name, child["digest"])
            return _Document(stored.digest, stored.media_type, stored.body)
    raise ArchiveError(
        message=f"{name}@{index.digest} has no image for {wanted}: it has {', '.join(offered)} "
        "(choose one with --platform)"
    )


def _write_oci(
    tar: tarfile.TarFile, store: Store, name: str, tag: str, tree: _Entry, meter: _Meter
) -> None:
    """An OCI layout: its index.json names the image by its tag (and whole, for containerd)."""
    root = tree.root
    descriptor = {
        "mediaType": root.media_type,
        "digest": root.digest,
        "size": len(root.body),
        "annotations": {CONTAINERD_NAME: f"{name}:{tag}", REF_NAME: tag},
    }
    index = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": [descriptor]}
    _add_bytes(tar, "oci-layout", OCI_LAYOUT)
    _add_bytes(tar, "index.json", json.dumps(index, indent=2).encode())
    manifest_paths = [_blob_path(digests.parse(d.digest)) for d in tree.manifests]
    _add_folders(tar, manifest_paths + [path for path, _ in tree.blobs.values()])
    for path, document in zip(manifest_paths, tree.manifests, strict=True):
        _add_bytes(tar, path, document.body)
    _add_blobs(tar, store, name, tree, meter)


def _write_docker(
    tar: tarfile.TarFile, store: Store, name: str, tag: str, tree: _Entry, meter: _Meter
) -> None:
    """What `docker load` reads: manifest.json naming the config and the layers, in order."""
    parsed = _parse(tree.root)
    config = parsed.blobs[0] if parsed.media_type in manifests.IMAGE_TYPES else None
    if config is None or config.media_type not in _IMAGE_CONFIGS:
        raise ArchiveError(message=f"{name}:{tag} is not a container image: docker cannot load it")
    layers = [_blob_path(layer) for layer in parsed.layers]
    if not all(str(layer) in tree.blobs for layer in parsed.layers):
        raise ArchiveError(
            message=f"{name}:{tag} has foreign layers, which are not in the registry"
        )
    listed = [
        {"Config": _blob_path(config.digest), "RepoTags": [f"{name}:{tag}"], "Layers": layers}
    ]
    _add_bytes(tar, "manifest.json", json.dumps(listed, indent=2).encode())
    _add_folders(tar, [path for path, _ in tree.blobs.values()])
    _add_blobs(tar, store, name, tree, meter)


def _add_blobs(tar: tarfile.TarFile, store: Store, name: str, tree: _Entry, meter: _Meter) -> None:
    for digest, (path, size) in tree.blobs.items():
        with store.open_blob(name, digest) as blob:
            if blob.size != size:
                raise ArchiveError(message=f"blob {digest} is {blob.size} bytes, not {size}")
            tar.addfile(_member(path, size), cast(IO[bytes], _Metered(blob, meter)))


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes) -> None:
    tar.addfile(_member(path, len(data)), io.BytesIO(data))


def _add_folders(tar: tarfile.TarFile, paths: list[str]) -> None:
    """The folders of `paths`, parents first: some readers create none themselves."""
    folders = sorted({f for p in paths for f in _parents(p)}, key=lambda f: (f.count("/"), f))
    for folder in folders:
        member = _member(folder, 0)
        member.type, member.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(member)


def _parents(path: str) -> Iterator[str]:
    while (path := posixpath.dirname(path)) != "":
        yield path


def _member(path: str, size: int) -> tarfile.TarInfo:
    """A tar entry with fixed owner, mode and time: the same image, the same archive."""
    member = tarfile.TarInfo(path)
    member.size, member.mode, member.mtime = size, 0o644, 0
    return member


# --- sources: a tar file or a folder ------------------------------------------------------


class _Source(Protocol):
    """Files of an archive or a layout folder, by their clean relative path."""

    def size(self, path: str) -> int | None:
        """The file's size; None if there is no such file."""

    def open(self, path: str) -> IO[bytes]: ...

    def __enter__(self) -> _Source: ...

    def __exit__(self, *exc: object) -> None: ...


def _open_source(path: Path) -> _Source:
    if path.is_dir():
        return _Folder(path)
    if not path.exists():
        raise ArchiveError(message=f"{path}: no such file or folder")
    return _Tar(path)


class _Folder:
    def __init__(self, root: Path) -> None:
        self._root = root

    def size(self, path: str) -> int | None:
        found = self._root / _clean(path)
        return found.stat().st_size if found.is_file() else None

    def open(self, path: str) -> IO[bytes]:
        return (self._root / _clean(path)).open("rb")

    def __enter__(self) -> _Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Tar:
    """A tar file (plain or compressed) read in place: members stream from the file."""

    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by __exit__)
        except (tarfile.TarError, EOFError):
            raise ArchiveError(message=f"{path}: not a tar archive") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self._tar.getmembers():
                name = _clean(member.name)
                if member.issym():
                    _clean(posixpath.join(posixpath.dirname(name), member.linkname))
                elif member.islnk():
                    _clean(member.linkname)
                self._members[name] = member
        except (tarfile.TarError, EOFError) as e:
            self._tar.close()
            raise ArchiveError(message=f"{path}: a broken tar archive ({e})") from None
        except ArchiveError:
            self._tar.close()
            raise

    def _find(self, path: str) -> tarfile.TarInfo | None:
        """The regular file at `path`, following links within the archive."""
        member = self._members.get(_clean(path))
        for _ in range(_LINK_HOPS):
            if member is None or member.isfile():
                return member
            if member.issym():
                target = posixpath.join(posixpath.dirname(_clean(member.name)), member.linkname)
            elif member.islnk():
                target = member.linkname
            else:
                return None
            member = self._members.get(_clean(target))
        return None

    def size(self, path: str) -> int | None:
        member = self._find(path)
        return member.size if member is not None else None

    def open(self, path: str) -> IO[bytes]:
        member = self._find(path)
        stream = self._tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ArchiveError(message=f"{path} is missing from the archive")
        return stream

    def __enter__(self) -> _Tar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()


def _clean(path: str) -> str:
    """A path inside the archive, normalised; one that would leave it is refused."""
    cleaned = posixpath.normpath(path)
    if posixpath.isabs(cleaned) or cleaned == ".." or cleaned.startswith("../"):
        raise ArchiveError(message=f"{path!r} points outside the archive")
    return cleaned


def _blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _check_size(path: str, size: int | None, expected: int, what: str) -> None:
    if size is None:
        raise ArchiveError(message=f"{what} is missing ({path})")
    if size != expected:
        raise ArchiveError(
            message=f"{what}: {path} is {size} bytes, its descriptor says {expected}"
        )


def _read_small(source: _Source, path: str, limit: int, what: str) -> bytes:
    size = source.size(path)
    if size is None:
        raise ArchiveError(message=f"{what} is missing ({path})")
    if size > limit:
        raise ArchiveError(message=f"{what}: {path} is {size} bytes, more than {limit}")
    with source.open(path) as f:
        return f.read()


def _read_json(source: _Source, path: str, kind: type) -> Any:
    try:
        document = load_json(_read_small(source, path, JSON_LIMIT, path))
    except ValueError as e:
        raise ArchiveError(message=f"{path}: not valid JSON ({e})") from None
    if not isinstance(document, kind):
        raise ArchiveError(message=f"{path}: not a JSON {'list' if kind is list else 'object'}")
    return document


# --- progress -----------------------------------------------------------------------------


class _Meter:
    """Bytes copied so far, told to a progress callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self._progress, self._total, self._done = progress, total, 0
        self.advance(0)

    def advance(self, n: int) -> None:
        self._done += n
        if self._progress is not None:
            self._progress(self._done, self._total)


class _Metered:
    """A stream that tells a meter what was read from it (tarfile and put_blobs call read)."""

    def __init__(self, stream: IO[bytes] | BlobReader, meter: _Meter) -> None:
        self._stream, self._meter = stream, meter

    def read(self, n: int = -1) -> bytes | bytearray:
        data = self._stream.read(n)
        self._meter.advance(len(data))
        return data
