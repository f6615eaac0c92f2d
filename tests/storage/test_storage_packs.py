"""storage.packs on its own: a pack hroot writes by hand is one git reads and checks."""

from __future__ import annotations

import os
import subprocess

from storage import Store, packs
from tests.storage.images import git


def test_a_big_blob_in_pieces_empty_ones_among_them_is_the_blob_git_names(store: Store) -> None:
    """Pieces of any size, empty ones included (a stream's first piece writes the zlib
    header), give the id `git hash-object` gives, in a pack `git verify-pack` accepts."""
    data = os.urandom(9 << 20)  # over packs' held size: written as it comes
    pack = packs.PackWriter(store._objects)
    with pack:
        writer = pack.blob(len(data))
        for piece in (b"", data[:1000], b"", data[1000 : 5 << 20], data[5 << 20 :], b""):
            writer.write(piece)
        oid = writer.finish().hex()
        pack.finish()
    named = (
        subprocess.run(
            ["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    assert oid == named
    (idx,) = (store.path / "objects" / "pack").glob("pack-*.idx")
    git(store, "verify-pack", str(idx))
    assert git(store, "cat-file", "-s", oid).strip() == str(len(data))
