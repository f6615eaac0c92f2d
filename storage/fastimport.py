"""Writing a view's commit to git: its files' blobs into one pack, its trees and commit
through one `git fast-import` run.

The filesystem view (storage.fsview, docs/format.md §9) sends every file of an image
through here as it comes out of the tar, whatever its size: memory holds one piece of
it. The blobs go into a pack of hroot's own (storage.packs), compressed with ISA-L at
level 1: fast-import compressed them with zlib, 7 times slower on this machine (40
against 287 MB/s at level 1, for 4% less), so the view of an image of 273 MB of new
files took 9.6 s to build, where it now takes 3.8 s. A file git has already is named by
its id and not written again. fast-import then writes the trees, each new `.meta` and
the commit, and moves the ref only if the new commit descends from where the ref is.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from dulwich.object_store import DiskObjectStore

from storage.commits import AUTHOR
from storage.errors import GitFailed
from storage.layers import Readable, Refused
from storage.packs import PackWriter

# fast-import writes the trees, the commit and each new `.meta`: at zlib's fastest level
# (the repository's pack.compression 0 is for layers, compressed already), and with no
# delta against the blob written just before, which is unrelated (`git gc` finds deltas).
FAST_IMPORT = (
    "-c",
    "pack.compression=1",
    "fast-import",
    "--big-file-threshold=1",
    "--quiet",
    "--done",
)
# git's modes of tree entries, as fast-import reads them
MODE_TREE, MODE_FILE, MODE_EXEC, MODE_LINK = b"040000", b"100644", b"100755", b"120000"
_C_ESCAPED = re.compile(rb'[\x00-\x1f"\\\x7f]')  # escaped in a path fast-import reads


class Writer:
    """One commit of a view: blobs written as they come (`blob`, `data`, each naming its
    blob by id), then `commit`, which installs their pack and has `git fast-import`
    write the trees and the commit onto the ref, under git's ref lock: a
    compare-and-swap. `finish` waits for it; `kill` drops all of it."""

    def __init__(self, gitdir: Path, store: DiskObjectStore) -> None:
        self._gitdir = gitdir
        self._pack = PackWriter(store)
        self._process: subprocess.Popen[bytes] | None = None

    def blob(self, size: int, content: Readable) -> bytes:
        """`size` bytes of `content` as a blob: its hex id. Refused if they fail to come
        (nothing of them is kept)."""

        def exactly(n: int) -> bytes | bytearray:
            data = content.read(n)
            if len(data) != n:
                raise Refused(message="a file's content ends early")
            return data

        return self._pack.add_blob(size, exactly, compress=True).hex().encode()

    def data(self, data: bytes) -> bytes:
        """A blob of `data`: its hex id."""
        return self._pack.add(b"blob", data).hex().encode()

    def commit(
        self, ref: bytes, parent: bytes | None, message: str, lines: Iterator[bytes]
    ) -> None:
        """A commit of the tree that `lines` (fast-import file commands) make from nothing,
        the blobs they name installed first."""
        self._pack.finish()
        self._process = subprocess.Popen(
            ["git", "--git-dir", str(self._gitdir), *FAST_IMPORT],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        encoded = message.encode()
        head = b"commit %s\ncommitter %s %d +0000\ndata %d\n%s\n" % (
            ref,
            AUTHOR,
            int(time.time()),
            len(encoded),
            encoded,
        )
        self._write(head + (b"from %s\n" % parent if parent else b"") + b"deleteall\n")
        for line in lines:
            self._write(line)
        self._write(b"\n")

    def finish(self) -> None:
        """Let fast-import write its pack and move the ref; GitFailed if it could not."""
        self._pack.close()
        process = self._process
        assert process is not None and process.stdin is not None and process.stderr is not None
        try:
            self._write(b"done\n")
            process.stdin.close()
        except GitFailed:
            pass  # it ended already: its stderr says why
        with process.stderr:
            err = process.stderr.read()
        if process.wait() != 0:
            raise GitFailed(
                message=f"git fast-import failed: {err.decode(errors='replace').strip()}"
            )

    def kill(self) -> None:
        """Stop without a commit: fast-import's pack stays unfinished and unnamed, and a
        pack of blobs not yet installed is dropped."""
        self._pack.close()
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _write(self, data: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except (BrokenPipeError, ValueError):
            raise GitFailed(message="git fast-import stopped reading") from None


def c_quoted(path: bytes) -> bytes:
    """A path as fast-import reads any path: in double quotes, C escapes inside."""
    return b'"' + _C_ESCAPED.sub(lambda match: b"\\%03o" % match[0][0], path) + b'"'
