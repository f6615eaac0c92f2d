"""storage.archives: images out of one store as archives and into another, as pushes.

Every store here is a real git repository; what an import did is read back with the
git command line (the branch's tree and commits, `git for-each-ref` for refused ones).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Store, archives, digests
from storage.archives import ArchiveError
from tests.documents import descriptor
from tests.storage.images import assert_fsck_clean, git, push_image, push_index, put

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def second(tmp_path: Path) -> Iterator[Store]:
    """Another registry, to import into."""
    opened = Store.open(tmp_path / "second.git")
    yield opened
    opened.close()


def export(store: Store, name: str, tag: str, path: Path, **options: str) -> archives.Image:
    with path.open("wb") as out:
        return archives.export_image(store, name, tag, out, **options)


def tree_of(store: Store, name: str) -> str:
    return git(store, "rev-parse", f"hroot/{name}^{{tree}}").strip()


def commits_of(store: Store, name: str) -> list[str]:
    return git(store, "log", "--format=%H %P", f"hroot/{name}").splitlines()


def git_bytes(store: Store, *args: str) -> bytes:
    """The git command line's binary output (`git archive`, `git cat-file blob`)."""
    return subprocess.run(
        ["git", "--git-dir", str(store.path), *args], capture_output=True, check=True
    ).stdout


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for name, target in (links or {}).items():
            member = tarfile.TarInfo(name)
            member.type, member.linkname = tarfile.SYMTYPE, target
            tar.addfile(member)
    return path


def test_oci_archive_round_trip(store: Store, second: Store, tmp_path: Path) -> None:
    image = push_image(store, "app", layers=3, layer_size=300_000)
    reported: list[tuple[int, int]] = []
    archive = tmp_path / "app.tar"
    with archive.open("wb") as out:
        exported = archives.export_image(
            store, "app", "v1", out, progress=lambda *p: reported.append(p)
        )
    assert exported.digest == image.digest
    assert reported[-1] == (len(image.config) + 900_000,) * 2

    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (listed,) = json.loads(files["index.json"])["manifests"]
    assert listed["digest"] == image.digest
    assert listed["annotations"] == {
        archives.REF_NAME: "v1",
        archives.CONTAINERD_NAME: "app:v1",
    }
    for blob in [image.manifest, image.config, *image.layers]:
        assert files[f"blobs/sha256/{digests.of(blob).hex}"] == blob

    imported = archives.import_images(second, archive)
    assert [(i.name, i.tag, i.digest) for i in imported] == [("app", "v1", image.digest)]
    # The same layout, byte for byte: the same git tree as the store it came from.
    assert tree_of(second, "app") == tree_of(store, "app")
    (commit,) = commits_of(second, "app")
    message = git(second, "log", "-1", "--format=%B", "hroot/app")
    assert message.startswith(f"push app:v1 {image.digest}\n")
    assert f"Manifest-Digest: {image.digest}" in message

    # A second import changes nothing, as a second push of the same image would not.
    archives.import_images(second, archive)
    assert commits_of(second, "app") == [commit]
    assert_fsck_clean(second)


def test_index_round_trip_children_first(store: Store, second: Store, tmp_path: Path) -> None:
    index, amd64, arm64 = push_index(store, "multi", "1")
    archive = tmp_path / "multi.tar"
    assert export(store, "multi", "1", archive).digest == index

    imported = archives.import_images(second, archive, name="copy:2")
    assert [(i.name, i.tag, i.digest) for i in imported] == [("copy", "2", index)]
    pushed = git(second, "log", "--reverse", "--format=%s", "hroot/copy").splitlines()
    assert pushed == [
        f"push copy@{amd64.digest}",
        f"push copy@{arm64.digest}",
        f"push copy:2 {index}",
    ]
    assert second.get_manifest("copy", arm64.digest).body == arm64.manifest


def test_oci_layout_folder(store: Store, second: Store, tmp_path: Path) -> None:
    """A branch tip checked out (`git archive`) is an OCI layout whose ref.names are bare
    tags: it names no repository, so --name must."""
    v1 = push_image(store, "app", tag="v1")
    v2 = push_image(store, "app", tag="v2")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(
        fileobj=io.BytesIO(git_bytes(store, "archive", "--format=tar", "hroot/app"))
    ) as tar:
        tar.extractall(layout, filter="data")

    with pytest.raises(ArchiveError, match=r"does not name image .*give --name NAME\[:TAG\]"):
        archives.import_images(second, layout)
    with pytest.raises(ArchiveError, match="holds 2 images"):
        archives.import_images(second, layout, name="copy:v9")
    assert git(second, "for-each-ref") == ""

    imported = archives.import_images(second, layout, name="copy")
    assert sorted((i.tag, i.digest) for i in imported) == [("v1", v1.digest), ("v2", v2.digest)]
    assert second.tags("copy") == ["v1", "v2"]
    assert tree_of(second, "copy") == tree_of(store, "app")


def test_lineage_as_a_push(store: Store, second: Store, tmp_path: Path) -> None:
    """An imported image built on an imported base gets the base's commit as second parent."""
    base = push_image(store, "base", tag="1")
    top = os.urandom(500)
    put(store, "app", top)
    for blob in [base.config, *base.layers]:
        put(store, "app", blob)
    app_manifest = json.dumps(
        {
            **json.loads(base.manifest),
            "layers": [*json.loads(base.manifest)["layers"], descriptor("application/x", top)],
        }
    ).encode()
    store.put_manifest("app", "1", app_manifest)
    for name in ("base", "app"):
        export(store, name, "1", tmp_path / f"{name}.tar")
        archives.import_images(second, tmp_path / f"{name}.tar")

    (base_commit,) = commits_of(second, "base")
    app_commit = commits_of(second, "app")[0].split()
    assert app_commit[2] == base_commit.split()[0]
    assert "Base-Image: base@" in git(second, "log", "-1", "--format=%B", "hroot/app")


def docker_save(path: Path, repo_tags: list[str] | None, layers: list[bytes]) -> tuple[bytes, Path]:
    """A classic `docker save` archive: <id>/layer.tar each, a repeated layer a symlink."""
    diff_ids = [str(digests.of(layer)) for layer in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    config_name = f"{digests.of(config).hex}.json"
    files = {config_name: config}
    links = {}
    paths = []
    for n, layer in enumerate(layers):
        folder = f"{n:064x}"
        first = layers.index(layer)
        if first == n:
            files[f"{folder}/layer.tar"] = layer
        else:
            links[f"{folder}/layer.tar"] = f"../{first:064x}/layer.tar"
        paths.append(f"{folder}/layer.tar")
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": paths}]
    files["manifest.json"] = json.dumps(manifest).encode()
    return config, write_tar(path, files, links)


def test_docker_save_archive(store: Store, tmp_path: Path) -> None:
    layers = [os.urandom(2048), os.urandom(1024)]
    config, archive = docker_save(
        tmp_path / "saved.tar",
        ["127.0.0.1:5000/team/app:1", "team/app:latest"],
        [layers[0], layers[1], layers[0]],
    )
    imported = archives.import_images(store, archive)
    assert [(i.name, i.tag) for i in imported] == [("team/app", "1"), ("team/app", "latest")]
    assert imported[0].digest == imported[1].digest
    manifest = store.get_manifest("team/app", "1")
    assert manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    document = json.loads(manifest.body)
    assert document["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": len(config),
        "digest": str(digests.of(config)),
    }
    assert [(d["mediaType"], d["digest"]) for d in document["layers"]] == [
        ("application/vnd.docker.image.rootfs.diff.tar", str(digests.of(layer)))
        for layer in [layers[0], layers[1], layers[0]]
    ]
    for layer in layers:
        oid = git(store, "rev-parse", f"hroot/team+app:blobs/sha256/{digests.of(layer).hex}")
        assert git_bytes(store, "cat-file", "blob", oid.strip()) == layer
    assert_fsck_clean(store)


def test_docker_save_holding_an_oci_layout(store: Store, tmp_path: Path) -> None:
    """docker 25 and later save an OCI layout beside manifest.json, named by containerd's
    annotation: its manifests are kept as they are."""
    image = push_image(store, "src", tag="v1")
    export(store, "src", "v1", tmp_path / "oci.tar")
    files = members(tmp_path / "oci.tar")
    index = json.loads(files["index.json"])
    index["manifests"][0]["annotations"] = {
        archives.CONTAINERD_NAME: "docker.io/library/saved:3",
        archives.REF_NAME: "3",
    }
    files["index.json"] = json.dumps(index).encode()
    files["manifest.json"] = b"[]"  # as docker writes it, unread when index.json is there
    archive = write_tar(tmp_path / "docker25.tar", files)

    (imported,) = archives.import_images(store, archive)
    assert (imported.name, imported.tag, imported.digest) == ("library/saved", "3", image.digest)


CORRUPTIONS = {
    "not a tar": "not a tar archive",
    "no index": r"neither an OCI layout \(index.json\) nor a docker save archive",
    "missing blob": "blob sha256:[0-9a-f]{64} of sha256:[0-9a-f]{64} is missing",
    "wrong bytes": "cannot import app:v1: provided digest did not match uploaded content",
    "escaping name": "'../evil' points outside the archive",
    "escaping link": "'blobs/sha256/../../../etc/passwd' points outside the archive",
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_archive_moves_no_ref(
    store: Store, second: Store, tmp_path: Path, corruption: str
) -> None:
    image = push_image(store, "app", layers=3)
    export(store, "app", "v1", tmp_path / "good.tar")
    files = members(tmp_path / "good.tar")
    last_layer = f"blobs/sha256/{digests.of(image.layers[-1]).hex}"
    archive = tmp_path / "bad.tar"
    links: dict[str, str] = {}
    if corruption == "not a tar":
        archive.write_bytes(b"{}" * 1000)
    elif corruption == "no index":
        del files["index.json"]
    elif corruption == "missing blob":
        del files[last_layer]
    elif corruption == "wrong bytes":  # the same size: caught only by its digest, last
        files[last_layer] = bytes(len(files[last_layer]))
    elif corruption == "escaping name":
        files["../evil"] = b"x"
    else:
        links["blobs/sha256/evil"] = "../../../etc/passwd"
    if corruption != "not a tar":
        write_tar(archive, files, links)
    push_image(second, "other")  # refs to keep as they are
    before = git(second, "for-each-ref")

    with pytest.raises(ArchiveError, match=CORRUPTIONS[corruption]) as refused:
        archives.import_images(second, archive)
    assert "\n" not in str(refused.value)
    assert git(second, "for-each-ref") == before
    assert_fsck_clean(second)


def test_export_docker_archive_of_an_index_picks_a_platform(store: Store, tmp_path: Path) -> None:
    _, _, arm64 = push_index(store, "multi", "1")
    archive = tmp_path / "arm.tar"
    exported = export(store, "multi", "1", archive, format="docker-archive", platform="linux/arm64")
    assert exported.digest == arm64.digest
    files = members(archive)
    (listed,) = json.loads(files["manifest.json"])
    assert listed["RepoTags"] == ["multi:1"]
    assert files[listed["Config"]] == arm64.config
    assert [files[path] for path in listed["Layers"]] == arm64.layers
    assert "index.json" not in files

    with pytest.raises(
        ArchiveError, match=r"no image for linux/s390x: it has linux/amd64, linux/arm64/v8"
    ):
        export(
            store,
            "multi",
            "1",
            tmp_path / "none.tar",
            format="docker-archive",
            platform="linux/s390x",
        )
    with pytest.raises(ArchiveError, match="no image multi:2"):
        export(store, "multi", "2", tmp_path / "none.tar")
