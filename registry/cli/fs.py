"""`hroot fs build NAME[:TAG]`: build the filesystem view of a repository (storage.fsview).

A server with `--fs-view` keeps the views of its repositories up to date after each
push; this builds them for what was pushed before that, or for a registry served
without it. It works beside a running server: the view's ref moves by compare-and-swap.
"""

from __future__ import annotations

import argparse

from registry.cli.common import (
    add_data_option,
    add_json_option,
    opened,
    print_json,
)
from registry.cli.display import jsonable
from storage import names


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fs",
        help="build the filesystem view of a repository in git",
        description="The filesystem view of a repository is the ref refs/hroot/fs/NAME: "
        "one folder per tag holding the image's files, so that `git diff hroot/fs/NAME:A "
        "hroot/fs/NAME:B` and `git log -p hroot/fs/NAME -- TAG/PATH` work on what is inside "
        "images (docs/format.md §9).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="build the view of a repository's tags, or of one tag",
        description="Bring the view of NAME up to its tags, reading the layers of each "
        "image it does not show yet; with NAME:TAG, that tag only. An image the view "
        "refuses (a hostile or damaged layer, too big) is named with the reason.",
    )
    build.add_argument("reference", metavar="NAME[:TAG]", help="a repository, or one tag of it")
    add_data_option(build)
    add_json_option(build)
    return parser


def run(args: argparse.Namespace) -> int:
    with opened(args) as store:
        name, _, tag = args.reference.partition(":")
        built = store.build_fs_view(names.check_name(name), tag or None)
    if args.json:
        print_json(jsonable(built))
        return 0
    if built.commit is None:
        print(f"fs view of {name}: up to date ({', '.join(built.kept) or 'no tags'})")
    else:
        print(
            f"fs view of {name}: built {', '.join(built.built) or 'nothing'}; "
            f"removed {', '.join(built.removed) or 'nothing'} in {built.seconds:.1f} s "
            f"(commit {built.commit[:12]})"
        )
    for where, reason in sorted(built.refused.items()):
        print(f"  refused {name}:{where}: {reason}")
    return 0
