"""Manifests: every kind the registry takes, the one commit each change makes, what
`git` sees, and what each kind of bad manifest gets."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from storage import Store, digests
from storage.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    TagInvalid,
    Unsupported,
)
from storage.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
)
from storage.types import Committed
from tests.documents import descriptor, image_manifest, index_manifest
from tests.storage.images import assert_fsck_clean, git, push_image, put


def commit_message(store: Store, rev: str) -> str:
    return git(store, "log", "-1", "--format=%B", rev)


def test_push_is_one_commit_whose_tree_is_an_oci_layout(store: Store) -> None:
    image = push_image(store, "library/alpine", "v1")
    log = git(store, "log", "--format=%s", "hroot/library+alpine").splitlines()
    assert log == [f"push library/alpine:v1 {image.digest}"]
    message = commit_message(store, "hroot/library+alpine")
    trailers = git(store, "interpret-trailers", "--parse", input_text=message)
    assert f"Manifest-Digest: {image.digest}" in trailers
    assert "Tag: v1" in trailers and f"Media-Type: {OCI_MANIFEST}" in trailers
    files = git(store, "ls-tree", "-r", "--name-only", "hroot/library+alpine").split()
    assert set(files) == {
        "oci-layout",
        "index.json",
        *(f"blobs/sha256/{digests.of(b).hex}" for b in [image.config, *image.layers]),
        f"blobs/sha256/{image.digest[7:]}",
    }
    index = json.loads(git(store, "show", "hroot/library+alpine:index.json"))
    assert index["manifests"] == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": image.digest,
            "size": len(image.manifest),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }
    ]
    # the staged blobs moved into the branch: nothing is left on staging
    assert git(store, "for-each-ref", "refs/hroot/") == ""
    assert_fsck_clean(store)


def test_git_archive_gives_a_layout_skopeo_reads(store: Store, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (apt-get install skopeo)")
    image = push_image(store, "img", "v1")
    push_image(store, "img", "v2")
    archive = subprocess.run(
        ["git", "--git-dir", str(store.path), "archive", "hroot/img"], capture_output=True
    ).stdout
    out = tmp_path / "layout"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{out}:v1"], capture_output=True, check=True
    ).stdout
    assert raw.rstrip(b"\n") == image.manifest  # skopeo prints a newline after it
    back = tmp_path / "copy"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--preserve-digests", f"oci:{out}:v1", f"oci:{back}:v1"],
        check=True,
    )
    copied = json.loads((back / "index.json").read_text())["manifests"][0]["digest"]
    assert copied == image.digest


def test_get_by_tag_and_digest_and_list_tags(store: Store) -> None:
    first = push_image(store, "img", "b")
    second = push_image(store, "img", "a")
    store.put_manifest("img", "c", first.manifest)
    assert store.get_manifest("img", "b").body == first.manifest
    found = store.get_manifest("img", second.digest)
    assert (found.digest, found.media_type, found.body) == (
        second.digest,
        OCI_MANIFEST,
        second.manifest,
    )
    assert store.tags("img") == ["a", "b", "c"]
    assert store.tags("img", n=2) == ["a", "b"]
    assert store.tags("img", n=2, last="b") == ["c"]
    assert store.tags("img", last="c") == []
    with pytest.raises(ManifestUnknown):
        store.get_manifest("img", "nope")
    with pytest.raises(ManifestUnknown):
        store.get_manifest("img", str(digests.of(b"nope")))
    with pytest.raises(NameUnknown):
        store.get_manifest("other", "a")
    with pytest.raises(NameUnknown):
        store.tags("other")


def test_retag_moves_the_tag_and_repush_makes_no_commit(store: Store) -> None:
    first = push_image(store, "img", "latest")
    second = push_image(store, "img", "latest")
    assert store.get_manifest("img", "latest").digest == second.digest
    assert store.get_manifest("img", first.digest).body == first.manifest  # still there
    count = len(git(store, "log", "--format=%H", "hroot/img").split())
    store.put_manifest("img", "latest", second.manifest)
    assert len(git(store, "log", "--format=%H", "hroot/img").split()) == count


def test_repositories_are_listed_sorted_and_paged(store: Store) -> None:
    for name in ["b", "a/b", "a", "c.lock", "a/b/c"]:
        push_image(store, name, layers=0)
    assert store.repositories() == ["a", "a/b", "a/b/c", "b", "c.lock"]
    assert store.repositories(n=2) == ["a", "a/b"]
    assert store.repositories(n=2, last="a/b") == ["a/b/c", "b"]
    assert git(store, "branch", "--list").split() == [
        "hroot/a",
        "hroot/a+b",
        "hroot/a+b+c",
        "hroot/b",
        "hroot/c.lock+",
    ]


def test_index_and_docker_kinds(store: Store) -> None:
    amd = push_image(store, "multi", tag=None)
    arm = push_image(store, "multi", tag=None)
    index = index_manifest([amd.manifest, arm.manifest])
    assert store.put_manifest("multi", "v1", index).media_type == OCI_INDEX
    layer, config = b"layer", b"{}"
    put(store, "docker", layer)
    put(store, "docker", config)
    docker = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor("application/vnd.docker.container.image.v1+json", config),
            "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)],
        }
    ).encode()
    store.put_manifest("docker", str(digests.of(docker)), docker)
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [{**descriptor(DOCKER_MANIFEST, docker), "platform": {"os": "linux"}}],
        }
    ).encode()
    assert store.put_manifest("docker", "latest", listing).media_type == DOCKER_LIST
    # children pushed by digest are in index.json, untagged
    entries = json.loads(git(store, "show", "hroot/multi:index.json"))["manifests"]
    assert [e.get("annotations") for e in entries] == [
        {"org.opencontainers.image.ref.name": "v1"},
        None,
        None,
    ]
    assert_fsck_clean(store)


def test_artifacts_subjects_and_referrers(store: Store) -> None:
    image = push_image(store, "img", "v1")
    # an artifact with the empty config, which the client need not upload
    sbom = json.dumps({"sbom": True}).encode()
    put(store, "img", sbom)
    empty = descriptor("application/vnd.oci.empty.v1+json", EMPTY_CONFIG)
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": empty,
            "layers": [descriptor("application/spdx+json", sbom)],
            "subject": descriptor(OCI_MANIFEST, image.manifest),
            "annotations": {"org.example": "yes"},
        }
    ).encode()
    pushed = store.put_manifest("img", str(digests.of(artifact)), artifact)
    assert pushed.subject == image.digest
    # a signature whose subject is not (yet) in the registry is fine too
    missing_subject = {"mediaType": OCI_MANIFEST, "digest": str(digests.of(b"x")), "size": 1}
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": empty,
            "layers": [],
            "subject": missing_subject,
        }
    ).encode()
    store.put_manifest("img", str(digests.of(signature)), signature)
    referrers = store.referrers("img", image.digest)
    assert referrers["manifests"] == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": str(digests.of(artifact)),
            "size": len(artifact),
            "artifactType": "application/spdx+json",
            "annotations": {"org.example": "yes"},
        }
    ]
    assert store.referrers("img", image.digest, "application/other")["manifests"] == []
    assert len(store.referrers("img", missing_subject["digest"])["manifests"]) == 1
    assert store.referrers("nothing-here", image.digest)["manifests"] == []
    assert store.get_manifest("img", str(digests.of(signature))).subject == str(digests.of(b"x"))


def test_non_distributable_layers_need_not_be_present(store: Store) -> None:
    config = b'{"os":"windows"}'
    put(store, "win", config)
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": str(digests.of(b"elsewhere")),
        "size": 9,
        "urls": ["https://example.invalid/layer"],
    }
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor("application/vnd.docker.container.image.v1+json", config),
            "layers": [foreign],
        }
    ).encode()
    store.put_manifest("win", "ltsc", manifest)
    assert store.get_manifest("win", "ltsc").body == manifest


def test_sha512_manifest_digest(store: Store) -> None:
    image = push_image(store, "img", tag=None)
    digest = str(digests.of(image.manifest, "sha512"))
    assert store.put_manifest("img", digest, image.manifest).digest == digest
    assert store.get_manifest("img", digest).body == image.manifest


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", ManifestInvalid),
        (b"\xff\xfe", ManifestInvalid),
        (b"[]", ManifestInvalid),
        (b'{"schemaVersion": 3, "config": {}}', ManifestInvalid),
        (b'{"schemaVersion": 2, "mediaType": "text/plain"}', ManifestInvalid),
        (b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}', ManifestInvalid),
        (
            b'{"schemaVersion": 2, "config": {"mediaType": "x", "size": -1, "digest": "sha256:'
            + b"0" * 64
            + b'"}}',
            ManifestInvalid,
        ),
        (b'{"schemaVersion": 2, "manifests": [{"digest": "sha256:nope"}]}', ManifestInvalid),
        (b'{"schemaVersion": 1, "name": "img", "tag": "v1", "fsLayers": []}', Unsupported),
        (b" " * (4 * 1024 * 1024 + 1), ManifestTooLarge),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "not-an-object",
        "schema-3",
        "unknown-media-type",
        "no-config",
        "negative-size",
        "bad-child-digest",
        "schema1",
        "over-4MiB",
    ],
)
def test_bad_manifests_are_refused(store: Store, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.put_manifest("img", "v1", body)
    assert git(store, "for-each-ref") == ""


def test_schema1_media_type_is_unsupported(store: Store) -> None:
    with pytest.raises(Unsupported):
        store.put_manifest(
            "img",
            "v1",
            b'{"schemaVersion": 1}',
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )


def test_content_type_must_agree_with_media_type(store: Store) -> None:
    image = push_image(store, "img", tag=None)
    with pytest.raises(ManifestInvalid):
        store.put_manifest("img", "v1", image.manifest, DOCKER_MANIFEST)
    assert store.put_manifest("img", "v1", image.manifest, OCI_MANIFEST).media_type == OCI_MANIFEST


def test_unknown_blobs_and_children_are_refused(store: Store) -> None:
    missing = image_manifest(b"{}", [b"never uploaded"])
    put(store, "img", b"{}")
    with pytest.raises(ManifestBlobUnknown) as raised:
        store.put_manifest("img", "v1", missing)
    assert raised.value.detail == [str(digests.of(b"never uploaded"))]
    with pytest.raises(ManifestBlobUnknown):
        store.put_manifest("img", "v1", index_manifest([missing]))
    # another repository's blobs do not count
    other = push_image(store, "other", "v1")
    with pytest.raises(ManifestBlobUnknown):
        store.put_manifest("img", "v1", other.manifest)


def test_digest_and_tag_errors(store: Store) -> None:
    image = push_image(store, "img", tag=None)
    with pytest.raises(DigestInvalid):
        store.put_manifest("img", str(digests.of(b"other")), image.manifest)
    with pytest.raises(DigestInvalid):
        store.put_manifest("img", "sha256:short", image.manifest)
    with pytest.raises(TagInvalid):
        store.put_manifest("img", "-bad", image.manifest)


def test_delete_tag_keeps_the_manifest(store: Store) -> None:
    image = push_image(store, "img", "v1")
    store.put_manifest("img", "v2", image.manifest)
    store.delete_tag("img", "v1")
    assert store.tags("img") == ["v2"]
    store.delete_tag("img", "v2")
    assert store.tags("img") == []
    assert store.get_manifest("img", image.digest).body == image.manifest
    assert git(store, "log", "-1", "--format=%s", "hroot/img") == "delete tag img:v2\n"
    with pytest.raises(ManifestUnknown):
        store.delete_tag("img", "v2")
    with pytest.raises(NameUnknown):
        store.delete_tag("nothing", "v1")


def test_delete_manifest_removes_it_and_its_tags(store: Store) -> None:
    image = push_image(store, "img", "v1")
    store.put_manifest("img", "v2", image.manifest)
    kept = push_image(store, "img", "v3")
    store.delete_manifest("img", image.digest)
    assert store.tags("img") == ["v3"]
    with pytest.raises(ManifestUnknown):
        store.get_manifest("img", image.digest)
    assert store.get_manifest("img", "v3").digest == kept.digest
    message = commit_message(store, "hroot/img")
    assert message.startswith(f"delete manifest img@{image.digest}\n")
    assert "Tag: v1\nTag: v2" in message
    # history keeps it: the previous commit's layout still has the manifest
    assert git(store, "show", f"hroot/img~1:blobs/sha256/{image.digest[7:]}").encode() == (
        image.manifest
    )
    with pytest.raises(ManifestUnknown):
        store.delete_manifest("img", image.digest)
    assert_fsck_clean(store)


def test_first_parent_is_the_previous_tip(store: Store) -> None:
    push_image(store, "img", "v1")
    before = git(store, "rev-parse", "hroot/img").strip()
    push_image(store, "img", "v2")
    assert git(store, "rev-parse", "hroot/img^1").strip() == before
    assert git(store, "log", "--first-parent", "--format=%s", "hroot/img").startswith("push img:v2")


def test_second_parent_is_the_push_of_the_base_image(store: Store) -> None:
    base = push_image(store, "library/base", "v1", layers=2)
    push_image(store, "library/base", "v2")  # the base branch moves on
    base_push = git(store, "rev-parse", "hroot/library+base~1").strip()
    extra = b"app layer"
    put(store, "app", extra)
    for data in [base.config, *base.layers]:
        put(store, "app", data)
    app = image_manifest(base.config, [*base.layers, extra])
    store.put_manifest("app", "v1", app)
    parents = git(store, "log", "-1", "--format=%P", "hroot/app").split()
    assert parents[1] == base_push
    # the first parent of a repository's first push is its empty layout, so that
    # `git log --first-parent` stays the repository's own history
    assert git(store, "log", "--first-parent", "--format=%s", "hroot/app").splitlines() == [
        f"push app:v1 {digests.of(app)}",
        "create app",
    ]
    assert json.loads(git(store, "show", f"{parents[0]}:index.json"))["manifests"] == []
    assert f"Base-Image: library/base@{base.digest}" in commit_message(store, "hroot/app")
    # an image with no base in the registry gets no second parent
    push_image(store, "app", "v2", layers=3)
    assert len(git(store, "log", "-1", "--format=%P", "hroot/app").split()) == 1
    # the same image again: its base is merged already (docs/format.md §4), named again
    store.put_manifest("app", "v3", app)
    assert len(git(store, "log", "-1", "--format=%P", "hroot/app").split()) == 1
    assert f"Base-Image: library/base@{base.digest}" in commit_message(store, "hroot/app")
    assert "library/base" in git(store, "log", "--graph", "--all", "--format=%s")
    assert_fsck_clean(store)


def test_objects_over_core_big_file_threshold_are_read(store: Store) -> None:
    """dulwich refuses loose objects over core.bigFileThreshold (8 MiB, for `git gc`); a
    9 MiB manifest still reads back."""
    image = push_image(store, "img", tag=None)
    document = json.loads(image.manifest)
    document["annotations"] = {"padding": "x" * (9 * 1024 * 1024)}
    big = json.dumps(document).encode()
    with pytest.raises(ManifestTooLarge):
        store.put_manifest("img", "big", big)
    store.put_manifest("img", "big", big, max_size=16 * 1024 * 1024)
    assert store.get_manifest("img", "big").body == big


def test_a_refused_manifest_writes_no_object(store: Store) -> None:
    missing = image_manifest(b"{}", [b"never uploaded"])
    with pytest.raises(ManifestBlobUnknown):
        store.put_manifest("img", "v1", missing)
    assert git(store, "count-objects").startswith("0 objects")


def test_listeners_hear_of_each_commit_once_the_branch_has_it(store: Store) -> None:
    heard: list[tuple[str, str, str]] = []

    def listen(committed: Committed) -> None:
        tip = git(store, "rev-parse", "refs/heads/hroot/app").strip()
        heard.append((committed.commit, tip, committed.summary))
        assert committed.repository == "app"

    store.on_commit(listen)
    image = push_image(store, "app", "v1")
    store.delete_tag("app", "v1")
    log = git(store, "log", "--format=%H %s", "refs/heads/hroot/app").splitlines()
    assert [f"{commit} {summary}" for commit, _, summary in reversed(heard)] == log
    assert all(commit == tip for commit, tip, _ in heard)
    assert heard[0][2] == f"push app:v1 {image.digest}"
