"""Writing to git through one `git fast-import` run: blobs streamed in, one commit out.

The filesystem view (storage.fsview, docs/format.md §9) sends every file of an image
through here as it comes out of the tar, whatever its size: memory holds one piece of it.
fast-import writes one pack, and moves the ref only if the new commit descends from
where the ref is; a small file git has already is named by its id, never sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dulwich.object_store import DiskObjectStore

from storage import objects
from storage.commits import AUTHOR
from storage.errors import GitFailed
from storage.layers import Refused

# Files up to this size are read whole and hashed before fast-import is told of them, so
# that one git has already costs no more (an image's next version shares most files).
HASHED_FIRST = 8 << 20
# pack.compression: the repository's 0 is for layers, compressed already; files are not,
# and zlib's fastest level keeps them nearly as small as its default, much faster (a
# 120 MB gzip layer of /usr: 110 MB of pack in 14 s, against 102 MB in 24 s, 2 busy cores).
# --big-file-threshold=1: no delta against the blob written just before, which is
# unrelated (8 s of that image); `git gc` finds the deltas between versions of a file.
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
    """A `git fast-import` run: blobs streamed in, then one commit onto a ref.

    It writes one pack. A file up to HASHED_FIRST bytes that the repository has already
    (most files of an image's next version) is hashed here and named by its id, never
    sent: fast-import's hashing and compression are most of a build's time. fast-import
    moves the ref only if the new commit descends from where the ref is, under git's ref
    lock: a compare-and-swap.
    """

    def __init__(self, gitdir: Path, store: DiskObjectStore) -> None:
        self._store = store
        self._marks = 0
        self._process = subprocess.Popen(
            ["git", "--git-dir", str(gitdir), *FAST_IMPORT],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdin is not None
        self._stdin = self._process.stdin

    def blob(self, size: int, content: BinaryIO) -> bytes:
        """`size` bytes of `content` as a blob: its id if the repository has it already (a
        file of an image shown before: hashed here, never sent), else its mark, streamed
        in. If the content fails to come, the blob is padded out (the stream must stay
        whole) and the error raised."""
        if size <= HASHED_FIRST:
            data = content.read(size)
            if len(data) != size:
                raise Refused(message="a file's content ends early")
            return self.data(data)
        mark = self._mark(b"data %d\n" % size)
        left = size
        try:
            while left and (piece := content.read(min(left, objects.CHUNK))):
                self._write(piece)
                left -= len(piece)
            if left:
                raise Refused(message="a file's content ends early")
        finally:
            while left:
                pad = min(left, objects.CHUNK)
                self._write(bytes(pad))
                left -= pad
            self._write(b"\n")
        return mark

    def data(self, data: bytes) -> bytes:
        """A blob of `data`: its id if the repository has it already, else its mark."""
        oid = hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest().encode()
        if objects.freshen(self._store, oid):
            return oid
        mark = self._mark(b"data %d\n" % len(data))
        self._write(data + b"\n")
        return mark

    def commit(
        self, ref: bytes, parent: bytes | None, message: str, lines: Iterator[bytes]
    ) -> None:
        """A commit of the tree that `lines` (fast-import file commands) make from nothing."""
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
        try:
            self._write(b"done\n")
            self._stdin.close()
        except GitFailed:
            pass  # it ended already: its stderr says why
        assert self._process.stderr is not None
        with self._process.stderr:
            err = self._process.stderr.read()
        if self._process.wait() != 0:
            raise GitFailed(
                message=f"git fast-import failed: {err.decode(errors='replace').strip()}"
            )

    def kill(self) -> None:
        """Stop it without a crash report: its pack stays unfinished and unnamed."""
        self._process.kill()
        self._process.wait()
        for pipe in (self._stdin, self._process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _mark(self, header: bytes) -> bytes:
        self._marks += 1
        mark = b":%d" % self._marks
        self._write(b"blob\nmark %s\n%s" % (mark, header))
        return mark

    def _write(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
        except (BrokenPipeError, ValueError):
            raise GitFailed(message="git fast-import stopped reading") from None


def c_quoted(path: bytes) -> bytes:
    """A path as fast-import reads any path: in double quotes, C escapes inside."""
    return b'"' + _C_ESCAPED.sub(lambda match: b"\\%03o" % match[0][0], path) + b'"'
