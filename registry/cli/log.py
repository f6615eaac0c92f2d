"""`hroot log NAME`: a repository's history for people, newest first."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from registry.cli.common import add_data_option, add_json_option, positive, print_json
from registry.cli.display import jsonable, reading
from registry.formats import short, size, when
from storage.history import LogEntry, TagChange


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "log",
        help="show the history of a repository",
        description="The pushes and deletes of repository NAME, newest first (the first-parent "
        "history of branch hroot/NAME): which tags moved from which image to which, each "
        "image's size and platforms, the image it was built FROM, and the commit.",
    )
    parser.add_argument("name", metavar="NAME", help="the repository")
    parser.add_argument(
        "-n", type=positive, metavar="N", dest="limit", help="show only the newest N commits"
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with reading(args) as store:
        entries = store.log(args.name, args.limit)
        if args.json:
            print_json(jsonable(list(entries)))
        else:
            _print(entries)
    return 0


def _print(entries: Iterable[LogEntry]) -> None:
    for number, entry in enumerate(entries):
        if number:
            print()
        print(f"{entry.commit[:12]}  {when(entry.time)}  {short(entry.summary)}", flush=True)
        for change in entry.tags:
            print(f"    {_tag_line(change)}")
        if entry.image is not None:
            platforms = ", ".join(entry.image.platforms) or "no platform"
            print(f"    image {entry.image.digest}  {platforms}  {size(entry.image.size)}")
        for base in entry.bases:
            where = f" ({base.platform})" if base.platform else ""
            print(f"    built from {base.repository}@{base.digest}{where}")


def _tag_line(change: TagChange) -> str:
    if change.old is None:
        return f"tag {change.tag} added: {short(change.new)}"
    if change.new is None:
        return f"tag {change.tag} removed (was {short(change.old)})"
    return f"tag {change.tag} moved: {short(change.old)} -> {short(change.new)}"
