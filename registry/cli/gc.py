"""`hroot gc`: remove what abandoned writes left, then let git repack and prune (storage.gc),
with opt-in retention first (storage.retention).

Safe beside a running `hroot serve`: nothing younger than the expiry goes, and no
object a ref, a staging ref or a write under way needs is pruned.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from tqdm import tqdm

from registry.cli.common import (
    add_data_option,
    add_json_option,
    one_line_errors,
    open_store,
    positive,
    print_json,
)
from registry.formats import size
from storage import gc
from storage.retention import Dropped, Rules


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "gc",
        help="remove abandoned uploads and leftovers, then repack and prune",
        description="Remove upload spools, tmp_obj files and staging refs older than the "
        "expiry, stale ref locks, and then repack and prune the git repository (never "
        "--prune=now: unreachable objects go once older than the expiry). Also while "
        "`hroot serve` runs. A deleted repository's bytes (`hroot rm`, `git branch -D`) "
        "leave the disk once they are older than the expiry, except blobs other "
        "repositories share. Retention (off unless asked for) drops untagged manifests and "
        "cuts old history first, so that overwritten and deleted tags leave the disk too.",
    )
    parser.add_argument(
        "--expiry",
        type=float,
        default=gc.EXPIRY_SECONDS,
        metavar="SECONDS",
        help=f"what is younger stays (default {gc.EXPIRY_SECONDS:.0f}, a day). Under "
        f"{gc.ALONE_EXPIRY_SECONDS:.0f} it is refused while another process (a server) has "
        "the registry open: only a server's own gc knows the writes it has under way",
    )
    add_retention_options(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only say what retention would drop; change nothing and do no gc",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def add_retention_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The retention flags (storage.retention), as `--PREFIXdrop-untagged` and so on."""
    parser.add_argument(
        f"--{prefix}drop-untagged",
        metavar="DAYS",
        type=_days,
        help="drop untagged manifests untagged for longer than DAYS, with the blobs no "
        "other manifest needs (never one younger than the expiry)",
    )
    parser.add_argument(
        f"--{prefix}keep-commits",
        metavar="N",
        type=positive,
        help="keep at least the last N commits of each repository's history; older ones are "
        "cut off under a root commit that names them, lineage edges to them dropped",
    )
    parser.add_argument(
        f"--{prefix}keep-days",
        metavar="DAYS",
        type=_days,
        help="keep at least the last DAYS of each repository's history (with --keep-commits: "
        "what either keeps)",
    )


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 <= days < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days, 0 or more")
    return days


def run(args: argparse.Namespace) -> int:
    if args.expiry < 0:
        args.parser.error("--expiry must not be negative")
    rules = Rules(args.drop_untagged, args.keep_commits, args.keep_days)
    if args.dry_run and not rules.any:
        args.parser.error("--dry-run shows what retention would drop: give a retention option")
    store = open_store(args)
    if args.dry_run:
        with one_line_errors(store.path):
            try:
                dropped = store.retain(rules, args.expiry, dry_run=True)
            finally:
                store.close()
        if args.json:
            print_json(asdict(dropped))
        else:
            _print_dropped(dropped, "would drop")
        return 0
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

            report = store.gc(args.expiry, step, rules)
    finally:
        store.close()
    if args.json:
        print_json(report.as_dict())
        return 0
    if report.dropped is not None:
        _print_dropped(report.dropped, "dropped")
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


def _print_dropped(dropped: Dropped, verb: str) -> None:
    """What retention dropped (or would), a line per repository, then the sums."""
    for repo in sorted(dropped.manifests.keys() | dropped.commits.keys() | dropped.lineage.keys()):
        parts = []
        if repo in dropped.manifests:
            parts.append(
                f"{len(dropped.manifests[repo])} untagged manifest(s), "
                f"{dropped.blobs.get(repo, 0)} blob(s)"
            )
        if repo in dropped.commits:
            parts.append(f"{dropped.commits[repo]} commit(s) of history")
        if repo in dropped.lineage:
            parts.append(f"{dropped.lineage[repo]} lineage edge(s)")
        print(f"{repo}: {verb} {', '.join(parts)}")
        for digest in dropped.manifests.get(repo, []):
            print(f"  {digest}")
    for repo in dropped.moved:
        print(f"{repo}: pushed to meanwhile; its history is cut by the next gc")
    print(f"retention {verb} {dropped.summary()}")
