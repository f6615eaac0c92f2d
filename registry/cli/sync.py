"""`hroot sync`: one fetch of another registry's branches, as a follower does every interval.

git negotiates what this repository lacks and sends only that (storage.transport); a
server running on the repository meanwhile sees the moved branches at its next read.
"""

from __future__ import annotations

import argparse

from registry import follow
from registry.cli.common import (
    add_data_option,
    add_json_option,
    data_path,
    fail,
    open_store,
    print_json,
)
from registry.config import ConfigError
from storage import StoreError, names, transport


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sync",
        help="fetch another registry's repositories once",
        description="Fetch every repository (branch hroot/<name>) of another registry into "
        "this one, creating it if missing: each branch the source has is set to the "
        "source's commit, even one pushed here since (the source wins). Branches the source "
        "lacks stay, unless --prune deletes them: with it, this registry mirrors the "
        "source. Only objects missing here are transferred. `hroot serve --follow` does "
        "the same (pruned) every few seconds.",
    )
    parser.add_argument(
        "source",
        metavar="URL",
        help="the source registry: its git endpoint (http://HOST:PORT/git/) or the path of "
        "its repository",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also delete the repositories the source does not have",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        follow.check_source(args.source, data_path(args))
    except ConfigError as e:
        fail(str(e).removeprefix("follow: "))
    store = open_store(args, create=True)  # refuses a path that is not a registry's
    gitdir = store.path
    store.close()
    try:
        fetched = transport.fetch(gitdir, args.source, prune=args.prune)
    except StoreError as e:
        fail(follow.reason(e))
    source = follow.shown(args.source)
    if args.json:
        print_json(
            {
                "source": source,
                "changed": [
                    {
                        "branch": follow.branch(ref),
                        "repository": names.repository(ref.encode()),
                        "old": old,
                        "new": new,
                    }
                    for ref, (old, new) in fetched.changed.items()
                ],
            }
        )
        return 0
    for ref, (old, new) in fetched.changed.items():
        print(f"{follow.branch(ref)}: {follow.change(old, new)}")
    if not fetched.changed:
        print(f"up to date with {source}")
    return 0
