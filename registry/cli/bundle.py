"""`hroot bundle create|apply`: repositories carried across an air gap as a git bundle.

`create` reads the repository and `apply` writes it only through git's own ref
updates, so both work while `hroot serve` runs on it (storage.bundles).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from registry.cli.common import (
    add_data_option,
    add_json_option,
    fail,
    one_line_errors,
    open_store,
    print_json,
)
from storage import bundles


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bundle",
        help="write repositories to a git bundle, or bring one in",
        description="Carry repositories to a registry with no network path to this one: "
        "`create` writes a git bundle (`git bundle verify FILE` reads it), `apply` brings "
        "one into a registry and checks its images before any client sees them.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="write a bundle of some or all repositories",
        description="Write a git bundle of the repositories NAME… (default: all). With "
        "--since only what is new travels; when nothing is, no file is written and the "
        "command says so and exits 0.",
    )
    create.add_argument("file", metavar="FILE", type=Path, help="the bundle to write")
    create.add_argument("names", metavar="NAME", nargs="*", help="repositories (default: all)")
    create.add_argument(
        "--since",
        metavar="BUNDLE-or-DATE",
        help="leave out what an earlier bundle holds (a file), or commits before a date "
        "as git reads it ('2024-05-01', '2 weeks ago'); the result applies only on top "
        "of what it leaves out",
    )
    apply = actions.add_parser(
        "apply",
        help="bring a bundle into a registry (created if missing)",
        description="Fetch a bundle's repositories into the registry (others stay as they "
        "are), then check their images as `hroot fsck` does: if any is damaged, every "
        "repository goes back to where it was and the problems are listed.",
    )
    apply.add_argument("file", metavar="FILE", type=Path, help="the bundle to apply")
    for sub in (create, apply):
        add_data_option(sub)
        add_json_option(sub)
    return parser


def run(args: argparse.Namespace) -> int:
    store = open_store(args, create=args.action == "apply")
    gitdir = store.path
    store.close()
    if args.action == "create":
        return _create(args, gitdir)
    return _apply(args, gitdir)


def _create(args: argparse.Namespace, gitdir: Path) -> int:
    with one_line_errors(args.file):
        created = bundles.create(gitdir, args.file, args.names, args.since)
    written = bool(created.repositories)
    if args.json:
        print_json(
            {
                "file": str(created.file) if written else None,
                "repositories": created.repositories,
                "size": created.size,
            }
        )
    elif written:
        count = len(created.repositories)
        what = "repository" if count == 1 else "repositories"
        print(f"wrote {created.file}: {count} {what}, {created.size} bytes")
    else:
        print(f"nothing new since {args.since}: {args.file} not written")
    return 0


def _apply(args: argparse.Namespace, gitdir: Path) -> int:
    with one_line_errors(args.file):
        try:
            applied = bundles.apply(gitdir, args.file)
        except bundles.BundleRejected as rejected:
            if args.json:
                print_json({"problems": rejected.problems})
            listed = "".join(f"\n  {problem}" for problem in rejected.problems)
            fail(f"{rejected.message} ({rejected.detail}):{listed}")
    if args.json:
        print_json({"added": applied.added, "updated": applied.updated, "kept": applied.kept})
    else:
        for verb, found in (("added", applied.added), ("updated", applied.updated)):
            for name in found:
                print(f"{verb} {name}")
        for name in applied.kept:
            print(f"kept {name} (newer here than in the bundle)")
        if not (applied.added or applied.updated or applied.kept):
            print("nothing new: every repository of the bundle is here already")
    return 0
