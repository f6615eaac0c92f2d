"""`hroot gc`: remove what abandoned writes left, then let git repack and prune (storage.gc).

Safe beside a running `hroot serve`: nothing younger than the expiry goes, and no
object a ref, a staging ref or a write under way needs is pruned.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from registry.cli.common import (
    add_data_option,
    add_json_option,
    one_line_errors,
    open_store,
    print_json,
)
from registry.cli.display import size
from storage import gc


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "gc",
        help="remove abandoned uploads and leftovers, then repack and prune",
        description="Remove upload spools, tmp_obj files and staging refs older than the "
        "expiry, stale ref locks, and then repack and prune the git repository (never "
        "--prune=now: unreachable objects go once older than the expiry). Also while "
        "`hroot serve` runs. A deleted repository's bytes (`hroot rm`, `git branch -D`) "
        "leave the disk once they are older than the expiry, except blobs other "
        "repositories share.",
    )
    parser.add_argument(
        "--expiry",
        type=float,
        default=gc.EXPIRY_SECONDS,
        metavar="SECONDS",
        help=f"what is younger stays (default {gc.EXPIRY_SECONDS:.0f}, a day). Beside a "
        "running server keep it longer than any push takes: the server keeps its own "
        "writes under way from its own gc, not from this process's",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.expiry < 0:
        args.parser.error("--expiry must not be negative")
    store = open_store(args)
    try:
        with (
            one_line_errors(store.path),
            tqdm(
                total=len(gc.STEPS),
                desc="gc",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
                leave=False,
            ) as bar,
        ):

            def step(name: str) -> None:
                bar.set_postfix_str(name)
                bar.update(1)

            report = store.gc(args.expiry, step)
    finally:
        store.close()
    if args.json:
        print_json(report.as_dict())
        return 0
    print(
        f"removed {report.spools} upload spool(s) ({size(report.spool_bytes)}), "
        f"{report.tmp_files} tmp file(s) ({size(report.tmp_bytes)}), "
        f"{report.staging_refs} staging ref(s) ({report.staged_blobs} staged blob(s)), "
        f"{report.incoming_refs} incoming ref(s), {report.locks} stale lock(s)"
    )
    print(
        f"objects {report.before.objects} -> {report.after.objects}, "
        f"{size(report.before.bytes)} -> {size(report.after.bytes)}: "
        f"reclaimed {size(report.reclaimed)} in {report.seconds:.1f} s"
    )
    return 0
