"""`hroot rm NAME`: delete a repository (Store.remove), also beside a running server."""

from __future__ import annotations

import argparse

from registry.cli.common import (
    add_data_option,
    add_json_option,
    opened,
    print_json,
)
from registry.cli.display import jsonable


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rm",
        help="delete a repository",
        description="Delete repository NAME in one step: its branch, its staged blobs and its "
        "uploads in progress; a pull of it then answers NAME_UNKNOWN. If a push lands while it "
        "is removed, nothing is removed and it says so. Its bytes stay in the git repository "
        "(other repositories may share them) until `hroot gc` prunes what no branch holds.",
    )
    parser.add_argument("name", metavar="NAME", help="the repository, e.g. library/alpine")
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with opened(args) as store:
        removed = store.remove(args.name)
    if args.json:
        print_json(jsonable(removed))
        return 0
    extra = ", its staged blobs" if removed.staged else ""
    if removed.uploads:
        extra += f", {removed.uploads} upload(s) in progress"
    print(f"removed {removed.repository} (was at {removed.commit[:12]}{extra})")
    return 0
