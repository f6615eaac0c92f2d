"""skopeo against hroot: OCI layouts (built by umoci) to the registry and back, indexes, zstd."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard

from .conftest import Cli, Hroot, ImageMaker
from .oci import add_index, check_layout, read_blob, tagged

pytestmark = pytest.mark.e2e

NO_TLS = "--tls-verify=false"
TO_HROOT = "--dest-tls-verify=false"
FROM_HROOT = "--src-tls-verify=false"
# Without it skopeo may swap a layer for another compression of it that its blob cache
# (/var/lib/containers/cache, shared by every run) saw in the registry: digests would change.
SAME = "--preserve-digests"


def inspect(skopeo: Cli, ref: str, *flags: str) -> Any:
    return json.loads(skopeo("inspect", NO_TLS, *flags, f"docker://{ref}"))


def tags(skopeo: Cli, hroot: Hroot, name: str) -> list[str]:
    listed = json.loads(skopeo("list-tags", NO_TLS, f"docker://{hroot.host}/{name}"))
    return sorted(listed["Tags"])


def test_copy_layout_to_hroot_and_back(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", {"/etc/hello": secrets.token_bytes(64)})
    ref = hroot.ref("skopeo/app", "v1")

    skopeo("copy", SAME, TO_HROOT, f"oci:{layout}:v1", f"docker://{ref}")
    assert inspect(skopeo, ref)["Digest"] == digest
    assert tags(skopeo, hroot, "skopeo/app") == ["v1"]
    hroot.assert_pushed("skopeo/app", digest)

    back = tmp_path / "back"
    skopeo("copy", SAME, FROM_HROOT, f"docker://{ref}", f"oci:{back}:v1")
    assert check_layout(back, "v1") == digest

    # The branch tip is an OCI layout that skopeo reads, and pushes again unchanged.
    from_git = hroot.export("skopeo/app", tmp_path / "git")
    assert check_layout(from_git, "v1") == digest
    assert json.loads(skopeo("inspect", f"oci:{from_git}:v1"))["Digest"] == digest
    again = hroot.ref("skopeo/from-git", "v1")
    skopeo("copy", SAME, TO_HROOT, f"oci:{from_git}:v1", f"docker://{again}")
    assert inspect(skopeo, again)["Digest"] == digest
    hroot.assert_pushed("skopeo/from-git", digest)


def test_multi_arch_index(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    amd64 = make_image(layout, "amd64", {"/etc/arch": b"amd64"}, arch="amd64")
    arm64 = make_image(layout, "arm64", {"/etc/arch": b"arm64"}, arch="arm64")
    index = add_index(layout, "multi", ["amd64", "arm64"])
    ref = hroot.ref("skopeo/multi", "multi")

    skopeo("copy", SAME, "--multi-arch", "all", TO_HROOT, f"oci:{layout}:multi", f"docker://{ref}")
    raw = inspect(skopeo, ref, "--raw")
    assert {m["digest"] for m in raw["manifests"]} == {amd64, arm64}
    hroot.assert_pushed("skopeo/multi", index, amd64, arm64)

    back = tmp_path / "back"
    skopeo("copy", SAME, "--multi-arch", "all", FROM_HROOT, f"docker://{ref}", f"oci:{back}:multi")
    assert check_layout(back, "multi") == index

    # A client that wants one platform resolves the index to it.
    one = tmp_path / "one"
    skopeo(
        "--override-arch", "arm64", "copy", SAME, FROM_HROOT, f"docker://{ref}", f"oci:{one}:arm"
    )
    assert check_layout(one, "arm") == arm64

    from_git = hroot.export("skopeo/multi", tmp_path / "git")
    assert check_layout(from_git, "multi") == index


def test_zstd_layers(skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path) -> None:
    # Content no cache has seen, so skopeo has to compress it anew rather than reuse a blob.
    secret = secrets.token_bytes(4096)
    layout = tmp_path / "layout"
    make_image(layout, "v1", {"/data/secret": secret}, with_busybox=False)
    ref = hroot.ref("skopeo/zstd", "v1")

    skopeo(
        "copy", TO_HROOT, "--dest-compress-format", "zstd", f"oci:{layout}:v1", f"docker://{ref}"
    )
    raw = inspect(skopeo, ref, "--raw")
    assert [layer["mediaType"] for layer in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"
    ], raw
    digest = inspect(skopeo, ref)["Digest"]
    hroot.assert_pushed("skopeo/zstd", digest)

    back = tmp_path / "back"
    skopeo("copy", SAME, FROM_HROOT, f"docker://{ref}", f"oci:{back}:v1")
    assert check_layout(back, "v1") == digest
    manifest = json.loads(read_blob(back, tagged(back, "v1")))
    layer = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(read_blob(back, manifest["layers"][0]))
    )
    with tarfile.open(fileobj=io.BytesIO(layer.read()), mode="r:") as tar:
        member = tar.extractfile("data/secret")
        assert member is not None and member.read() == secret


def test_delete_by_digest(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    one = make_image(layout, "one", {"/etc/n": b"one"}, with_busybox=False)
    two = make_image(layout, "two", {"/etc/n": b"two"}, with_busybox=False)
    for source, tag in [("one", "one"), ("one", "same"), ("two", "two")]:
        skopeo(
            "copy",
            SAME,
            TO_HROOT,
            f"oci:{layout}:{source}",
            f"docker://{hroot.ref('skopeo/del', tag)}",
        )
    assert tags(skopeo, hroot, "skopeo/del") == ["one", "same", "two"]
    before = hroot.commits("skopeo/del")
    assert len(before) == 3, before

    # skopeo deletes the manifest by digest: every tag of it goes, other manifests stay.
    skopeo("delete", NO_TLS, f"docker://{hroot.ref('skopeo/del', 'one')}")
    assert tags(skopeo, hroot, "skopeo/del") == ["two"]
    for gone in ("one", one):
        code, out = skopeo.attempt("inspect", NO_TLS, f"docker://{hroot.ref('skopeo/del', gone)}")
        assert code != 0, out
    assert inspect(skopeo, hroot.ref("skopeo/del", "two"))["Digest"] == two

    after = hroot.commits("skopeo/del")
    assert len(after) == 4 and after[0].parents == [before[0].sha], after
    from_git = hroot.export("skopeo/del", tmp_path / "git")
    assert check_layout(from_git, "two") == two
    assert {
        d["digest"] for d in json.loads((from_git / "index.json").read_bytes())["manifests"]
    } == {two}


def test_concurrent_pushes_to_one_repository(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    """DESIGN §2.5: clients pushing different tags of one repository at once all succeed."""
    layout = tmp_path / "layout"
    images = {
        f"t{n}": make_image(
            layout, f"t{n}", {"/etc/n": secrets.token_bytes(32)}, with_busybox=False
        )
        for n in range(4)
    }
    with ThreadPoolExecutor(len(images)) as pool:
        pushes = [
            pool.submit(
                skopeo,
                "copy",
                SAME,
                TO_HROOT,
                f"oci:{layout}:{tag}",
                f"docker://{hroot.ref('skopeo/race', tag)}",
            )
            for tag in images
        ]
        for push in pushes:
            push.result()
    assert tags(skopeo, hroot, "skopeo/race") == sorted(images)
    hroot.assert_pushed("skopeo/race", *images.values())
    from_git = hroot.export("skopeo/race", tmp_path / "git")
    for tag, digest in images.items():
        assert check_layout(from_git, tag) == digest


def test_serves_on_after_git_gc(
    skopeo: Cli, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    """DESIGN §2: the registry keeps working after a person runs git tools on its repository."""
    layout = tmp_path / "layout"
    first = make_image(layout, "v1", {"/etc/n": secrets.token_bytes(64)})
    skopeo("copy", SAME, TO_HROOT, f"oci:{layout}:v1", f"docker://{hroot.ref('skopeo/gc', 'v1')}")

    hroot.git("gc", "--prune=now", "--quiet")  # every object into a pack, loose ones gone
    assert hroot.git("count-objects", "-v").splitlines()[0] == "count: 0"

    back = tmp_path / "back"
    skopeo("copy", SAME, FROM_HROOT, f"docker://{hroot.ref('skopeo/gc', 'v1')}", f"oci:{back}:v1")
    assert check_layout(back, "v1") == first
    second = make_image(layout, "v2", {"/etc/n": secrets.token_bytes(64)})
    skopeo("copy", SAME, TO_HROOT, f"oci:{layout}:v2", f"docker://{hroot.ref('skopeo/gc', 'v2')}")
    assert tags(skopeo, hroot, "skopeo/gc") == ["v1", "v2"]
    hroot.assert_pushed("skopeo/gc", first, second)
