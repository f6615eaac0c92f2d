"""Git objects streamed by hand: whatever wrote them (hroot, or git at any zlib level),
loose or packed, they read back byte for byte, from any offset."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest
from dulwich.repo import Repo

from storage import deflate, digests, objects


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp_path / "r.git")], check=True)
    return Repo(str(tmp_path / "r.git"))


def git(repo: Repo, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", repo.path, *args], input=stdin, capture_output=True, check=True
    ).stdout


def read_from(repo: Repo, oid: str, offset: int) -> bytes:
    with objects.open_blob(repo.object_store, oid) as reader:
        reader.skip(offset)
        return b"".join(iter(lambda: reader.read(100_000), b""))


# random bytes stay stored; text compresses, so git's zlib writes compressed blocks
CONTENTS = {
    "random": os.urandom(300_000),
    "text": b"".join(b"line %d of some text\n" % i for i in range(20_000)),
    "empty": b"",
}


@pytest.mark.parametrize("kind", CONTENTS)
@pytest.mark.parametrize("offset", [0, 1, 65_535, 65_536, 200_001])
def test_objects_written_by_hroot_and_by_git_read_back(repo: Repo, kind: str, offset: int) -> None:
    data = CONTENTS[kind]
    ours = objects.write_blob(
        Path(repo.path) / "objects", io.BytesIO(data).read, len(data), digests.of(data)
    )
    theirs = git(repo, "-c", "core.compression=9", "hash-object", "-w", "--stdin", stdin=data)
    assert theirs.decode().strip() == ours  # same object id, whoever wrote it
    assert read_from(repo, ours, offset) == data[offset:]
    assert git(repo, "cat-file", "blob", ours) == data


# A docker image config: git's zlib spends so much of a loose object's first 64 bytes on
# a Huffman table that they inflate to `blob 10`, not the whole `blob 1053\0`.
KEYS = ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "Tty"]
KEYS += ["OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint"]
DOCKER_CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": dict.fromkeys([*KEYS, "OnBuild", "Labels"], "")
        | {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        | {"Image": "sha256:44ba5188b5612b6924f138a6980a9932a484caa87c1a73b72591523acf561fb2"},
        "container_config": dict.fromkeys([*KEYS, "OnBuild", "Labels"], False),
        "created": "2026-11-29T20:07:58.123456789Z",
        "docker_version": "20.10.24",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0123456789abcdef" * 4] * 3},
    },
    separators=(",", ":"),
).encode()


@pytest.mark.parametrize("level", [1, 9])
def test_loose_objects_git_wrote_first_read_back(repo: Repo, level: int) -> None:
    """As `git fetch` leaves them (unpacked, compressed by git's zlib), whatever the length
    of the Huffman table before the `blob <size>` header."""
    for data in [DOCKER_CONFIG, CONTENTS["text"][:5000], os.urandom(2000), b""]:
        oid = git(
            repo, "-c", f"core.looseCompression={level}", "hash-object", "-w", "--stdin", stdin=data
        )
        assert read_from(repo, oid.decode().strip(), 0) == data


@pytest.mark.parametrize("size", [objects.PARALLEL_HASH_SIZE - 1, objects.PARALLEL_HASH_SIZE])
def test_git_ids_hashed_inline_and_in_a_thread_are_gits(repo: Repo, size: int) -> None:
    data = os.urandom(size)
    ours = objects.write_blob(
        Path(repo.path) / "objects", io.BytesIO(data).read, size, digests.of(data)
    )
    assert git(repo, "hash-object", "--stdin", stdin=data).decode().strip() == ours
    git(repo, "fsck", "--strict")


def test_a_batch_names_its_objects_only_when_installed(repo: Repo) -> None:
    objects_dir = Path(repo.path) / "objects"
    tree = b"100644 a\x00" + bytes.fromhex(git(repo, "hash-object", "--stdin", stdin=b"a").decode())

    def leftovers() -> list[str]:
        return sorted(p.name for p in objects_dir.iterdir() if p.name.startswith("tmp_obj_"))

    with objects.ObjectBatch(repo.object_store) as batch:
        blob = batch.write(b"blob", b"a")
        assert batch.write(b"blob", b"a") == blob  # written once
        assert leftovers()
        unnamed = subprocess.run(["git", "--git-dir", repo.path, "cat-file", "-e", blob.decode()])
        assert unnamed.returncode != 0  # not an object until installed
    assert not leftovers()  # left uninstalled: nothing named, nothing behind
    assert not (objects_dir / blob[:2].decode() / blob[2:].decode()).exists()

    with objects.ObjectBatch(repo.object_store) as batch:
        blob = batch.write(b"blob", b"a")
        written = batch.write(b"tree", tree)
        batch.install()
    assert not leftovers()
    assert git(repo, "cat-file", "blob", blob.decode()) == b"a"
    assert git(repo, "ls-tree", written.decode()).split() == [b"100644", b"blob", blob, b"a"]
    git(repo, "fsck", "--strict", written.decode())


@pytest.mark.parametrize("compression", ["0", "9"])
def test_packed_objects_read_back(repo: Repo, compression: str) -> None:
    oids = {}
    for kind, data in CONTENTS.items():
        oids[kind] = git(repo, "hash-object", "-w", "--stdin", stdin=data).decode().strip()
    tree = git(
        repo,
        "mktree",
        stdin="".join(f"100644 blob {oid}\t{kind}\n" for kind, oid in oids.items()).encode(),
    )
    git(
        repo,
        "update-ref",
        "refs/heads/x",
        git(repo, "commit-tree", "-m", "x", tree.decode().strip()).decode().strip(),
    )
    git(repo, "-c", f"pack.compression={compression}", "gc", "--quiet", "--prune=now")
    assert not any(len(p.name) == 2 for p in (Path(repo.path) / "objects").iterdir())
    for kind, oid in oids.items():
        for offset in (0, 70_000):
            assert read_from(repo, oid, offset) == CONTENTS[kind][offset:]


@pytest.mark.parametrize("digits", range(1, 21))
def test_zlib_prefix_fits_every_blob_header(digits: int) -> None:
    """An upload's spool leaves SPOOL_PREFIX bytes for a header of any size's length."""
    header = b"blob " + b"9" * digits + b"\x00"
    prefix = deflate.zlib_prefix(header, objects.SPOOL_PREFIX)
    body = deflate.stored_block_header(3) + b"abc" + deflate.FINAL_BLOCK
    stream = prefix + body + zlib.adler32(header + b"abc").to_bytes(4, "big")
    inflater = zlib.decompressobj()
    assert inflater.decompress(stream) == header + b"abc"
    assert inflater.eof and not inflater.unused_data
    # hroot's own reader takes the prefix in its stride: no fall back to zlib
    blocks = deflate.StoredBlocks(io.BytesIO(stream[len(deflate.ZLIB_HEADER) :]))
    assert blocks.read(len(header) + 3) == header + b"abc"


def test_spool_cut_short_by_a_crash_keeps_its_complete_blocks(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    objects.new_spool(path)
    with open(path, "r+b") as spool:
        spool.seek(0, os.SEEK_END)
        objects.append_spool(spool, b"x" * 70_000)
        spool.write(deflate.stored_block_header(1000) + b"only part")
    with open(path, "rb") as spool:
        assert deflate.scan_stored_blocks(spool, objects.SPOOL_PREFIX)[0] == 70_000
