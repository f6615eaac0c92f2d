"""Running git's own command line on the registry's repository, for what git does faster
than dulwich (`git log` over thousands of commits, path lookups across thousands of
branches) or only git does (`git repack`, `git gc`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from storage.errors import GitFailed


def run(gitdir: Path, *args: str, input: str | None = None) -> str:
    """git's output of `args`, with `input` on its stdin; GitFailed with its stderr if it
    fails."""
    done = subprocess.run(
        ["git", "--git-dir", str(gitdir), *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise GitFailed(message=f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout
