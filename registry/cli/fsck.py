"""`hroot fsck`: check the whole registry (storage.fsck) and say what is wrong, by repository."""

from __future__ import annotations

import argparse

from registry.cli.common import add_data_option, add_json_option, open_store, print_json
from registry.formats import size
from storage import fsck


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fsck",
        help="check every repository, git's objects and hroot's own files",
        description="Check that every branch's tip is a whole OCI layout (each blob hashes to "
        "its digest, each manifest's blobs are there, index.json lists what is there), run "
        "`git fsck --full --strict`, and look for what hroot leaves behind: stale ref locks, "
        "staging refs of repositories that no longer exist, staged blobs that are not their "
        "digest, refs of a bundle apply that never finished. Exit status 1 if anything is "
        "wrong. Only reads, so it may run beside `hroot serve`.",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="remove hroot's own leftovers (never a branch, commit or blob a branch holds), "
        "then check again",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    store = open_store(args)  # refuses a path that is no registry
    gitdir = store.path
    store.close()
    removed: list[str] = []
    report = fsck.check(gitdir)
    if args.repair:
        removed = fsck.repair(gitdir, report)
        report = fsck.check(gitdir)
    if args.json:
        print_json(
            {
                "repositories": report.repositories,
                "blobs": report.blobs,
                "size": report.size,
                "problems": [
                    {"repository": p.repository, "problem": p.text} for p in report.problems
                ],
                "removed": removed,
            }
        )
    else:
        _print(report, removed)
    return 1 if report.problems else 0


def _print(report: fsck.Report, removed: list[str]) -> None:
    for line in removed:
        print(line)
    groups: dict[str | None, list[str]] = {}
    for problem in report.problems:
        groups.setdefault(problem.repository, []).append(problem.text)
    for repository in sorted(groups, key=lambda r: (r is None, r or "")):
        print(f"{repository if repository is not None else '(registry)'}:")
        for text in groups[repository]:
            print(f"  {text}")
    found = f"{len(report.problems)} problem(s)" if report.problems else "no problems"
    print(
        f"checked {report.repositories} repositories, {report.blobs} blobs "
        f"({size(report.size)}): {found}"
    )
