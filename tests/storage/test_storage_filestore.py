"""Uncompressed tar layers stored as files and rebuilt byte for byte (docs/format.md §10),
checked on real tars and with the git command line."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from bench import debian
from storage import Store, archives, bundles, digests, fsck, retention, transport
from storage.errors import DigestInvalid
from tests import tars
from tests.documents import image_manifest
from tests.e2e.tools import missing
from tests.storage.images import age_objects, assert_fsck_clean, git, put


def upload(store: Store, repo: str, data: bytes, piece: int = 1 << 20) -> str:
    """An upload in pieces, as clients send it; the blob's digest."""
    digest = str(digests.of(data))
    upload_id = store.start_upload(repo)
    with store.open_upload(repo, upload_id) as writer:
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
    store.finish_upload(repo, upload_id, digest)
    return digest


def read(store: Store, repo: str, digest: str, start: int = 0, length: int = -1) -> bytes:
    with store.open_blob(repo, digest) as reader:
        reader.skip(start)
        out = bytearray()
        while (length < 0 or len(out) < length) and (
            chunk := reader.read(1 << 20 if length < 0 else length - len(out))
        ):
            out += chunk
        return bytes(out)


def stored_as_files(store: Store, ref: str) -> list[str]:
    """The digests whose layer `ref`'s tree holds as files, as git lists them."""
    listed = git(store, "ls-tree", "--name-only", f"{ref}:.hroot/layers/sha256")
    return [f"sha256:{hex_}" for hex_ in listed.split()]


def staged(repo: str) -> str:
    return f"refs/hroot/staging/{repo}"


def check_rebuilt(store: Store, data: bytes) -> str:
    """Upload `data`: it is stored as files and reads back byte for byte."""
    digest = upload(store, "t", data)
    assert digest in stored_as_files(store, staged("t"))
    assert store.stat_blob("t", digest).size == len(data)
    rebuilt = read(store, "t", digest)
    assert hashlib.sha256(rebuilt).hexdigest() == digest.removeprefix("sha256:")
    return digest


@pytest.mark.parametrize(
    "format_", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT], ids=str
)
def test_python_tars_of_each_format_rebuild_byte_for_byte(store: Store, format_: int) -> None:
    check_rebuilt(store, tars.python_tar(format_))


@pytest.mark.parametrize("format_", ["gnu", "posix", "oldgnu"])
def test_gnu_sparse_tars_rebuild(store: Store, tmp_path: Path, format_: str) -> None:
    folder = tars.sparse_folder(tmp_path / "sparse")
    data = tars.gnu_tar(folder, "--sparse", f"--format={format_}")
    check_rebuilt(store, data)


def test_gnu_tar_of_usr_share_doc_rebuilds(store: Store) -> None:
    check_rebuilt(store, tars.gnu_tar(Path("/usr/share/doc"), "--format=posix"))


@pytest.mark.parametrize("version", range(1, 11))
def test_debian_series_rebuilds(store: Store, version: int) -> None:
    path = debian.cache_dir() / f"v{version}.tar"
    if not path.exists():  # .ci/run builds the series
        missing("the Debian series", f"{path} is not cached: run `python -m bench debian`")
    check_rebuilt(store, path.read_bytes())


def test_odd_padding_and_trailing_garbage_rebuild(store: Store) -> None:
    """Blocking to 10 KiB, then bytes that are no block at all, still come back."""
    data = tars.python_tar(tarfile.GNU_FORMAT)
    check_rebuilt(store, data + bytes(10240 - len(data) % 10240) + b"\x07garbage" * 41)
    check_rebuilt(store, data[:-1024] + os.urandom(1000))  # garbage after one end block


def test_a_tar_that_does_not_parse_is_stored_whole(store: Store) -> None:
    data = bytearray(tars.python_tar(tarfile.GNU_FORMAT, seed=1))
    second = data.index(b"etc/hostname")  # a later header, its checksum broken
    data[second] ^= 0x20
    digest = upload(store, "t", bytes(data))
    assert "hroot" not in git(store, "ls-tree", "--name-only", staged("t"))
    assert read(store, "t", digest) == bytes(data)


def test_what_is_no_tar_is_stored_whole(store: Store) -> None:
    tarred = tars.python_tar(tarfile.PAX_FORMAT)
    for data in (gzip.compress(tarred, 1), os.urandom(2 << 20), tarred[:2000]):
        digest = upload(store, "t", data)
        assert read(store, "t", digest) == data
    assert "hroot" not in git(store, "ls-tree", "--name-only", staged("t"))


def test_a_tar_cut_short_is_stored_whole(store: Store) -> None:
    data = tars.python_tar(tarfile.PAX_FORMAT)
    cut = data[: data.index(b"usr/lib/big.bin") + 512 + 100_000]  # inside the big file
    digest = upload(store, "t", cut)
    assert "hroot" not in git(store, "ls-tree", "--name-only", staged("t"))
    assert read(store, "t", digest) == cut


def test_after_a_restart_the_rebuild_checks_the_digest(tmp_path: Path) -> None:
    """Without the digest tallied in memory, the read back is the digest's only check:
    a wrong digest stores nothing, the right one stores the layer as files."""
    data = tars.python_tar(tarfile.GNU_FORMAT)
    first = Store.open(tmp_path / "r.git")
    upload_id = first.start_upload("t")
    with first.open_upload("t", upload_id) as writer:
        writer.write(data)
    first.close()
    store = Store.open(tmp_path / "r.git")
    try:
        with pytest.raises(DigestInvalid):
            store.finish_upload("t", upload_id, str(digests.of(data + b"x")))
        upload_id = store.start_upload("t")
        with store.open_upload("t", upload_id) as writer:
            writer.write(data)
        store.close()
        store = Store.open(tmp_path / "r.git")
        digest = str(store.finish_upload("t", upload_id, str(digests.of(data))).digest)
        assert stored_as_files(store, staged("t")) == [digest]
        assert read(store, "t", digest) == data
    finally:
        store.close()


def test_range_reads_at_member_boundaries_and_inside(store: Store) -> None:
    data = tars.python_tar(tarfile.PAX_FORMAT)
    digest = check_rebuilt(store, data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    edges = {0, len(data) - 1}
    for member in members:
        edges |= {member.offset, member.offset_data, member.offset_data + member.size}
    picks = random.Random(7)
    spans = [(e + shift, length) for e in edges for shift in (-1, 0, 1) for length in (1, 700)]
    spans += [(picks.randrange(len(data)), picks.randrange(1, 300_000)) for _ in range(60)]
    for start, length in spans:
        if 0 <= start < len(data):
            assert read(store, "t", digest, start, length) == data[start : start + length]


def test_a_skip_then_reads_across_many_chunks(store: Store, tmp_path: Path) -> None:
    """A tar of thousands of small files has a map of many chunks: reads from anywhere,
    in pieces of any size, give the tar's bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(3000):
            body = os.urandom(i % 900)
            member = tarfile.TarInfo(f"files/{i:05d}")
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    data = out.getvalue()
    digest = check_rebuilt(store, data)
    with store.open_blob("t", digest) as reader:
        reader.skip(len(data) // 3)
        got = b""
        while chunk := reader.read(4093):
            got += chunk
    assert got == data[len(data) // 3 :]


def test_files_are_stored_once_across_versions(store: Store) -> None:
    """The second version of a layer with one file changed writes that file, not the rest."""
    files = {f"usr/lib/lib{i}.so": os.urandom(300_000) for i in range(8)}

    def version(changed: bytes) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, body in {**files, "etc/version": changed}.items():
                member = tarfile.TarInfo(name)
                member.size = len(body)
                tar.addfile(member, io.BytesIO(body))
        return out.getvalue()

    packs = store.path / "objects" / "pack"
    check_rebuilt(store, version(b"1\n"))
    first = {p: p.stat().st_size for p in packs.glob("*.pack")}
    check_rebuilt(store, version(b"2\n"))
    second = [p.stat().st_size for p in packs.glob("*.pack") if p not in first]
    assert len(second) == 1 and second[0] < 100_000 < sum(first.values())


def test_contents_small_big_and_repeated_are_each_one_blob_in_order(store: Store) -> None:
    """A content over the 8 MiB storage.packs hashes whole streams in between small ones;
    a content met twice in one tar is one blob. Every one is the blob `git hash-object`
    names, and the layer rebuilds byte for byte."""
    small = [os.urandom(random.Random(i).randrange(1, 70_000)) for i in range(600)]
    big = os.urandom((8 << 20) + 4097)
    contents = [*small[:300], big, *small[300:], small[7], big]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for number, body in enumerate(contents):
            member = tarfile.TarInfo(f"f/{number:04d}")
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    digest = check_rebuilt(store, out.getvalue())
    layer = f"{staged('t')}:.hroot/layers/sha256/{digest.removeprefix('sha256:')}"
    listed = git(store, "ls-tree", "-r", "--name-only", layer)
    held = {name.replace("/", "") for name in listed.split() if name != "index"}
    for body in {bytes(body) for body in contents}:
        hashed = subprocess.run(
            ["git", "hash-object", "--stdin"], input=body, capture_output=True, check=True
        )
        assert hashed.stdout.decode().strip() in held


def push_tar_image(store: Store, repo: str, tag: str, data: bytes) -> tuple[str, str]:
    """An image whose one layer is `data`, uncompressed; (layer digest, manifest digest)."""
    layer = upload(store, repo, data)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    put(store, repo, config)
    body = image_manifest(config, [data])
    return layer, store.put_manifest(repo, tag, body).digest


def test_git_archive_gives_the_layout_with_layers_rebuilt(store: Store, tmp_path: Path) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    layer, _ = push_tar_image(store, "app", "v1", data)
    assert stored_as_files(store, "hroot/app") == [layer]
    attributes = git(store, "show", "hroot/app:.gitattributes")
    assert f"/blobs/sha256/{layer.removeprefix('sha256:')} filter=hroot" in attributes
    archive = subprocess.run(
        ["git", "--git-dir", str(store.path), "archive", "hroot/app"],
        capture_output=True,
        check=True,
    ).stdout
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]
    extracted = (out / "blobs" / "sha256" / layer.removeprefix("sha256:")).read_bytes()
    assert extracted == data


def test_fsck_and_gc_keep_a_layer_stored_as_files(store: Store) -> None:
    data = tars.python_tar(tarfile.PAX_FORMAT)
    layer, _ = push_tar_image(store, "app", "v1", data)
    staged_only = upload(store, "other", tars.python_tar(tarfile.GNU_FORMAT, seed=3))
    assert_fsck_clean(store)
    assert fsck.check(store.path).problems == []
    age_objects(store)
    store.gc(expiry=0)
    assert read(store, "app", layer) == data
    assert len(read(store, "other", staged_only)) > tars.BIG
    assert fsck.check(store.path).problems == []


def test_deleting_the_layer_removes_its_files_from_the_tree(store: Store) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    layer, _ = push_tar_image(store, "app", "v1", data)
    store.delete_blob("app", layer)
    names = git(store, "ls-tree", "--name-only", "hroot/app")
    assert ".hroot" not in names and ".gitattributes" not in names


def test_a_blob_that_reads_like_a_pointer_is_served_as_pushed(store: Store) -> None:
    """A client's blob in the pointer's words, naming another layer, is its own bytes."""
    layer = check_rebuilt(store, tars.python_tar(tarfile.GNU_FORMAT))
    pointer = git(store, "cat-file", "blob", f"{staged('t')}:blobs/sha256/{layer[7:]}").encode()
    assert pointer.startswith(b"hroot layer stored as files")
    fake = put(store, "t", pointer)
    assert store.stat_blob("t", fake).size == len(pointer)
    assert read(store, "t", fake) == pointer


def test_a_monolithic_put_of_a_tar_is_stored_as_files(store: Store) -> None:
    data = tars.python_tar(tarfile.USTAR_FORMAT)
    digest = put(store, "t", data)
    assert stored_as_files(store, staged("t")) == [digest]
    assert read(store, "t", digest) == data


def test_opening_a_format_2_registry_upgrades_it(tmp_path: Path) -> None:
    path = tmp_path / "r.git"
    Store.open(path).close()
    subprocess.run(["git", "--git-dir", str(path), "config", "hroot.format", "2"], check=True)
    subprocess.run(["git", "--git-dir", str(path), "config", "--unset", "filter.hroot.smudge"])
    store = Store.open(path)
    try:
        assert git(store, "config", "hroot.format").strip() == "3"
        assert "storage.smudge" in git(store, "config", "filter.hroot.smudge")
        assert git(store, "config", "filter.hroot.required").strip() == "true"
    finally:
        store.close()


def announced_upload(store: Store, data: bytes, length: int, pieces: int = 7) -> str:
    """An upload whose first write says it brings `length` bytes (a Content-Length), as
    skopeo's and docker's do."""
    upload_id = store.start_upload("t")
    step = len(data) // pieces + 1
    with store.open_upload("t", upload_id, length=length) as writer:
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
    return upload_id


@pytest.mark.parametrize("announced", [None, tars.BIG, 10 << 20], ids=["right", "short", "long"])
def test_an_upload_whatever_it_announced_is_stored_as_files(
    store: Store, announced: int | None
) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    upload_id = announced_upload(store, data, announced or len(data))
    digest = str(store.finish_upload("t", upload_id, str(digests.of(data))).digest)
    assert stored_as_files(store, staged("t")) == [digest]
    assert read(store, "t", digest) == data


def test_an_upload_with_a_wrong_digest_stores_nothing(store: Store) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    upload_id = announced_upload(store, data, len(data))
    with pytest.raises(DigestInvalid):
        store.finish_upload("t", upload_id, str(digests.of(data + b"!")))
    assert git(store, "for-each-ref", "refs/hroot/staging/") == ""  # nothing staged
    assert not list((store.path / "objects" / "pack").glob("*"))


def test_bundles_and_fetches_carry_layers_stored_as_files(store: Store, tmp_path: Path) -> None:
    data = tars.python_tar(tarfile.PAX_FORMAT)
    layer, manifest = push_tar_image(store, "app", "v1", data)
    bundle = tmp_path / "all.bundle"
    bundles.create(store.path, bundle)
    for name, carry in (("bundled", lambda p: bundles.apply(p, bundle)), ("fetched", None)):
        target = Store.open(tmp_path / f"{name}.git")
        try:
            if carry is None:
                transport.fetch(target.path, str(store.path))
            else:
                carry(target.path)
            assert target.get_manifest("app", "v1").digest == manifest
            assert read(target, "app", layer) == data
            assert fsck.check(target.path).problems == []
        finally:
            target.close()


def test_export_writes_the_layer_rebuilt(store: Store) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    layer, _ = push_tar_image(store, "app", "v1", data)
    out = io.BytesIO()
    archives.export_image(store, "app", "v1", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        member = archive.extractfile(f"blobs/sha256/{layer.removeprefix('sha256:')}")
        assert member is not None and member.read() == data


def test_retention_keeps_a_dropped_layer_staged_with_its_files(store: Store) -> None:
    data = tars.python_tar(tarfile.GNU_FORMAT)
    layer, _ = push_tar_image(store, "app", "v1", data)
    push_tar_image(store, "app", "v1", tars.python_tar(tarfile.GNU_FORMAT, seed=9))
    dropped = store.retain(retention.Rules(untagged_days=0), expiry=0)
    assert dropped.manifests
    assert layer not in stored_as_files(store, "hroot/app")
    assert layer in stored_as_files(store, staged("app"))
    assert read(store, "app", layer) == data


def test_the_filesystem_view_reads_a_layer_stored_as_files(store: Store) -> None:
    """The view (§9) takes the layer rebuilt, and its files are the very blobs the layer
    is stored as."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in (("etc/hostname", b"box\n"), ("usr/lib/big.bin", os.urandom(tars.BIG))):
            member = tarfile.TarInfo(name)
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    push_tar_image(store, "app", "v1", out.getvalue())
    built = store.build_fs_view("app")
    assert built.refused == {} and built.built == ["v1"]
    assert git(store, "show", "hroot/fs/app:v1/etc/hostname") == "box\n"
    big = git(store, "rev-parse", "hroot/fs/app:v1/usr/lib/big.bin").strip()
    layer_tree = git(store, "ls-tree", "-r", "hroot/app:.hroot/layers")
    assert big in layer_tree
