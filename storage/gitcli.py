"""Running git's own command line on the registry's repository, for what git does faster
than dulwich (`git log` over thousands of commits, path lookups across thousands of
branches) or only git does (`git repack`, `git gc`)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from storage.errors import GitFailed


def run(gitdir: Path, *args: str, input: str | None = None, timeout: float | None = None) -> str:
    """git's output of `args`, with `input` on its stdin; GitFailed with its stderr if it
    fails (subprocess.TimeoutExpired after `timeout` seconds)."""
    done = subprocess.run(
        ["git", "--git-dir", str(gitdir), *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise GitFailed(message=f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def read_objects(gitdir: Path, oids: Sequence[bytes]) -> Iterator[tuple[bytes, bytes | None]]:
    """Each of `oids` (hex) with its content, None where git has no such object, in order,
    from one `git cat-file --batch`: dulwich reads 10,000 small objects from packs in
    1.5 s, git in 0.1 s. Its questions come from a file, so that neither side of the
    pipe waits on the other; stopping early closes the pipe, which ends git."""
    with tempfile.TemporaryFile() as questions:
        questions.write(b"".join(oid + b"\n" for oid in oids))
        questions.seek(0)
        command = ["git", "--git-dir", str(gitdir), "cat-file", "--batch"]
        with subprocess.Popen(command, stdin=questions, stdout=subprocess.PIPE) as git:
            assert git.stdout is not None
            for oid in oids:
                header = git.stdout.readline().split()  # OID TYPE SIZE, or OID missing
                if len(header) != 3:
                    yield oid, None
                    continue
                content = git.stdout.read(int(header[2]))
                git.stdout.read(1)  # the newline after each object
                yield oid, content


def object_sizes(gitdir: Path, oids: Sequence[bytes]) -> dict[bytes, int]:
    """The size of each of `oids` (hex) that git has, from one `git cat-file
    --batch-check`: dulwich resolves a small object stored as a delta to learn its size."""
    questions = "".join(f"{oid.decode()}\n" for oid in oids)
    answers = run(gitdir, "cat-file", "--batch-check=%(objectname) %(objectsize)", input=questions)
    sizes = {}
    for line in answers.splitlines():
        oid, _, size = line.partition(" ")
        if size.isdigit():  # not "OID missing"
            sizes[oid.encode()] = int(size)
    return sizes


def count_objects(gitdir: Path, timeout: float | None = None) -> dict[str, int]:
    """`git count-objects -v`: `count` and `size` (KiB) of loose objects, `in-pack`,
    `packs`, `size-pack` (KiB)… git walks 60,000 loose objects in 0.14 s where Python's
    scandir and stat take 0.45 s, in a process of its own, not holding the GIL."""
    lines = run(gitdir, "count-objects", "-v", timeout=timeout).splitlines()
    return {key: int(value) for key, _, value in (line.partition(": ") for line in lines)}
