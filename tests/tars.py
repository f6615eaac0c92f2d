"""A corpus of real tars for the tests of layers stored as files (docs/format.md §10):
Python's tarfile in each format, GNU tar's sparse files, and trees of this machine."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

BIG = 1_200_000  # a file this big makes any tar big enough to be split (filestore.MIN_SIZE)


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **fields: object) -> None:
    member = tarfile.TarInfo(name)
    member.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(member, key, value)
    if data is not None:
        member.size = len(data)
    tar.addfile(member, io.BytesIO(data) if data is not None else None)


def python_tar(format_: int, seed: int = 0) -> bytes:
    """Every kind of member Python's tarfile writes in `format_`: files (empty, big, with
    a long name), folders, hard and symbolic links (long targets), devices, a fifo,
    and in PAX extended attributes and non-ASCII names."""
    out = io.BytesIO()
    depth = 6 if format_ == tarfile.USTAR_FORMAT else 20  # ustar: 255 bytes at most
    long_dir = "deep/" + "/".join(f"folder-{i:02d}" for i in range(depth))
    with tarfile.open(fileobj=out, mode="w", format=format_) as tar:
        _add(tar, "etc", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "etc/hostname", b"box\n", mode=0o644, uname="root", gname="root")
        _add(tar, "etc/empty", b"")
        _add(tar, "usr/lib/big.bin", os.urandom(BIG), mode=0o755)
        _add(tar, f"{long_dir}/a-file-with-a-long-name.txt", b"deep\n" * (seed + 7))
        _add(tar, "odd-size", os.urandom(513 + seed))
        _add(tar, "same-as-odd-size", type=tarfile.LNKTYPE, linkname="odd-size")
        _add(tar, "etc/link", type=tarfile.SYMTYPE, linkname="hostname")
        link_target = "../" + "/".join(["up"] * (10 if format_ == tarfile.USTAR_FORMAT else 60))
        _add(tar, "long-link", type=tarfile.SYMTYPE, linkname=link_target)
        _add(tar, "dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _add(tar, "dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
        _add(tar, "run/fifo", type=tarfile.FIFOTYPE)
        if format_ == tarfile.PAX_FORMAT:
            xattrs = {
                "SCHILY.xattr.user.comment": "kept",
                "SCHILY.xattr.security.capability": "\x01",
            }
            member = tarfile.TarInfo("usr/bin/ping")
            member.size, member.pax_headers = 6, xattrs
            tar.addfile(member, io.BytesIO(b"ping!\n"))
            _add(tar, "naïve/ünïcødé.txt", b"utf-8 names\n")
            sized = tarfile.TarInfo("sized-by-pax")  # the PAX `size` record gives the size
            sized.size, sized.pax_headers = 3000, {"size": "3000"}
            tar.addfile(sized, io.BytesIO(os.urandom(3000)))
        _add(tar, "vendor-type", os.urandom(700), type=b"Z")  # unknown: its data is literal
    return out.getvalue()


def gnu_tar(folder: Path, *args: str) -> bytes:
    """GNU tar's own archive of `folder` (run in it) with `args`."""
    return subprocess.run(
        ["tar", "-c", "-f", "-", *args, "."], cwd=folder, capture_output=True, check=True
    ).stdout


def sparse_folder(folder: Path) -> Path:
    """A folder with a sparse file (holes between data) and a big plain one."""
    folder.mkdir()
    with open(folder / "sparse.img", "wb") as sparse:
        for offset in (0, 5 << 20, 11 << 20):
            sparse.seek(offset)
            sparse.write(os.urandom(70_000))
        sparse.truncate(16 << 20)
    (folder / "plain.bin").write_bytes(os.urandom(BIG))
    return folder
