"""`hroot ls`: every repository with its tags, manifests and bytes, unique or shared."""

from __future__ import annotations

import argparse

from registry.cli.common import add_data_option, add_json_option, print_json
from registry.cli.display import jsonable, reading
from registry.formats import size
from storage.history import Usage

_HEADINGS = ("REPOSITORY", "TAGS", "MANIFESTS", "SIZE", "UNIQUE", "SHARED")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ls",
        help="list repositories and the space they take",
        description="Every repository with its tag and manifest counts and the bytes of the "
        "blobs its tip holds: unique to it, or shared with another repository's tip (stored "
        "once in git, whichever repositories hold them).",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with reading(args) as store:
        usage = store.usage()
        if args.json:
            print_json(jsonable(usage))
        else:
            _print(usage)
    return 0


def _print(usage: Usage) -> None:
    rows = [_HEADINGS] + [
        (
            repo.repository,
            str(repo.tags),
            str(repo.manifests),
            size(repo.size),
            size(repo.unique),
            size(repo.shared),
        )
        for repo in usage.repositories
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADINGS))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print(
        f"\n{len(usage.repositories)} repositories, {usage.blobs} distinct blobs, "
        f"{size(usage.size)} (each blob once)"
    )
