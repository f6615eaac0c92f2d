"""Moving branches between registries with git's own transport (docs/format.md §7).

A registry's repositories are its `refs/heads/hroot/*` branches, so `git fetch` is
how another registry (a URL of hroot's `/git/` endpoint, a path, or a bundle file)
is copied in: git negotiates what the receiving side lacks and sends only that.
The git command line does the work; this module says which refs, and reports what
moved. Staging refs and upload spools never travel.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import StoreError
from storage.names import BRANCH_PREFIX

BRANCHES = BRANCH_PREFIX.decode() + "*"  # refs/heads/hroot/*
REFSPEC = f"+{BRANCHES}:{BRANCHES}"
INCOMING_PREFIX = "refs/hroot/incoming/"  # docs/format.md §5: fetched, not yet checked
# No git here may ask a terminal for a password (a server has nobody to answer: a primary
# that wants one fails the fetch instead of hanging it), and objects a fetch unpacks are
# written loose as hroot writes them, uncompressed: zlib over layers that are compressed
# already took most of a follower's fetch time (bench/replication.py).
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "core.looseCompression",
    "GIT_CONFIG_VALUE_0": "0",
}


class TransportError(StoreError):
    message = "git could not fetch"


@dataclass(frozen=True)
class Fetched:
    """What a fetch changed: refs (full names) with their old and new commit, None for none."""

    changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def branches(gitdir: Path) -> dict[str, str]:
    """Every `refs/heads/hroot/*` branch of the repository and its commit, as git sees them."""
    listed = _git(
        gitdir, "for-each-ref", "--format=%(refname) %(objectname)", BRANCH_PREFIX.decode()
    )
    return dict(line.split(" ", 1) for line in listed.splitlines() if line)  # type: ignore[misc]


def fetch(gitdir: Path, source: str, prune: bool = False, timeout: float = 3600) -> Fetched:
    """`git fetch` the registry branches of `source` into `gitdir`, each set to what the
    source says; with `prune`, branches the source no longer has are deleted too.

    A branch that hroot moves while the fetch runs is left as hroot wrote it: git
    updates each ref only from the value it read at the start.
    """
    before = branches(gitdir)
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    if prune:
        args.append("--prune")
    _git(gitdir, *args, source, REFSPEC, timeout=timeout)
    after = branches(gitdir)
    return Fetched(
        {
            ref: (before.get(ref), after.get(ref))
            for ref in sorted(before.keys() | after.keys())
            if before.get(ref) != after.get(ref)
        }
    )


@contextmanager
def incoming(gitdir: Path, source: str, timeout: float = 3600) -> Iterator[dict[str, str]]:
    """Fetch the registry branches of `source` where no reader looks, for checking first.

    Yields {branch ref: fetched commit}, the branches as `refs/heads/hroot/…` names;
    they sit under `refs/hroot/incoming/<id>/` meanwhile (reachable, so no gc takes
    their objects), and are gone when the block ends, whatever happened in it.
    """
    prefix = f"{INCOMING_PREFIX}{secrets.token_hex(8)}/"
    try:
        _git(
            gitdir,
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            source,
            f"+{BRANCHES}:{prefix}*",
            timeout=timeout,
        )
        listed = _git(gitdir, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
        fetched = dict(line.split(" ", 1) for line in listed.splitlines() if line)
        yield {
            BRANCH_PREFIX.decode() + ref.removeprefix(prefix): oid for ref, oid in fetched.items()
        }
    finally:
        left = _git(gitdir, "for-each-ref", "--format=delete %(refname)", prefix)
        if left:
            subprocess.run(
                ["git", "--git-dir", str(gitdir), "update-ref", "--stdin"],
                input=left,
                text=True,
                capture_output=True,
                check=False,
            )


def _git(gitdir: Path, *args: str, timeout: float = 600) -> str:
    try:
        done = subprocess.run(
            ["git", "--git-dir", str(gitdir), *args],
            env={**os.environ, **GIT_ENV},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TransportError(f"git {args[0]}: {error}") from None
    if done.returncode != 0:
        raise TransportError(f"git {args[0]}: {done.stderr.strip() or done.returncode}")
    return done.stdout
