"""python -m bench: hroot next to CNCF Distribution; python -m bench blob: the store alone;
python -m bench replication: a primary and its followers; python -m bench debian: build
(or show) the cached Debian image series."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from bench import blob, debian, replication, report, runner
from bench.suite import workloads
from bench.workloads import Workload

INSTALL = {
    "docker-registry": "apt-get install docker-registry  (CNCF Distribution 2.8)",
    "skopeo": "apt-get install skopeo",
    "git": "apt-get install git",
}


def ready(programs: list[str], modules: list[str]) -> bool:
    """Whether the machine has what the run needs; if not, says what is missing and how to
    get it."""
    lacking = [
        f"{program}: {INSTALL[program]}"
        for program in dict.fromkeys(programs)
        if shutil.which(program) is None
    ]
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            lacking.append(f"Python module {module}: not in this checkout (run from its root)")
    if lacking:
        print("missing, nothing was run:\n  " + "\n  ".join(lacking), file=sys.stderr)
    return not lacking


def selection(text: str) -> set[int]:
    try:
        return {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected workload numbers like 1,3: {text!r}") from None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark hroot side by side with CNCF Distribution (docker-registry).",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="shrink sizes and counts, e.g. 0.05 for a quick run",
    )
    parser.add_argument("--only", type=selection, help="workload numbers, e.g. 1,3")
    parser.add_argument("--rounds", type=int, help="rounds per workload instead of its own")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one round (or a server's setup) may take",
    )
    parser.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="where to write the results"
    )
    parser.add_argument(
        "--workdir", type=Path, help="parent of the temporary working folder (default: system temp)"
    )
    commands = parser.add_subparsers(dest="command")
    micro = commands.add_parser("blob", help="storage.Store micro benchmark with one big blob")
    micro.add_argument("--size-mib", type=int, default=1024)
    micro.add_argument("--json", type=Path, default=Path("bench-results-blob.json"))
    micro.add_argument("--workdir", type=Path)
    commands.add_parser(
        "debian", help="build the cached series of 10 Debian rootfs versions (needs root)"
    )
    follow = commands.add_parser(
        "replication", help="a primary and two followers: push-to-pull delay, bytes fetched"
    )
    follow.add_argument("--pushes", type=int, default=20, help="small pushes timed per phase")
    follow.add_argument("--fill-mib", type=int, default=1024, help="size of the registry")
    follow.add_argument("--interval", type=float, default=0.5, help="--follow-interval")
    follow.add_argument("--json", type=Path, default=Path("bench-results-replication.json"))
    follow.add_argument("--workdir", type=Path)
    return parser.parse_args(argv)


def run_registries(args: argparse.Namespace, work: Path) -> int:
    chosen: list[Workload] = [
        w for w in workloads(work, args.scale) if args.only is None or w.number in args.only
    ]
    if not chosen:
        print(f"no workload numbered {sorted(args.only)}", file=sys.stderr)
        return 2
    for workload in list(chosen):  # a workload that cannot run with this checkout says why
        reason = workload.skip()
        if reason:
            print(f"workload {workload.number} skipped: {reason}", file=sys.stderr)
            chosen.remove(workload)
    if not chosen:
        return 2
    if not ready(["docker-registry", *(t for w in chosen for t in w.tools)], ["registry.__main__"]):
        return 2
    lacking = [m for w in chosen for m in w.missing()]
    if lacking:
        print(
            "missing, nothing was run:\n  " + "\n  ".join(dict.fromkeys(lacking)), file=sys.stderr
        )
        return 2
    if args.rounds:
        for workload in chosen:
            workload.rounds = args.rounds
    results = asyncio.run(runner.run(chosen, args.timeout))
    meta = runner.environment() | {"scale": args.scale}
    heading = (
        f"hroot vs CNCF Distribution, scale {args.scale}, {meta['cpus']} CPUs: "
        "medians of the rounds; ratio = hroot / Distribution (below 1: hroot faster)"
    )
    print(report.table(results, heading))
    report.write_json(args.json, report.to_json(results, meta))
    print(f"\nresults: {args.json}")
    return 1 if any(o.error for r in results for o in r.outcomes.values()) else 0


def run_blob(args: argparse.Namespace, work: Path) -> int:
    if not ready(["git"], ["storage"]):
        return 2
    result = blob.run(work, args.size_mib << 20)
    print()
    print(result.table())
    report.write_json(args.json, {"meta": runner.environment(), **result.to_json()})
    print(f"\nresults: {args.json}")
    return 0


def run_replication(args: argparse.Namespace, work: Path) -> int:
    if not ready(["git"], ["registry.__main__"]):
        return 2
    result = replication.run(work, args.pushes, args.fill_mib << 20, args.interval)
    print()
    print(result.table())
    report.write_json(args.json, {"meta": runner.environment(), **result.to_json()})
    print(f"\nresults: {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.command == "debian":
        return debian.main()
    command = {"blob": run_blob, "replication": run_replication}.get(args.command, run_registries)
    with tempfile.TemporaryDirectory(prefix="hroot-bench-", dir=args.workdir) as work:
        return command(args, Path(work))


if __name__ == "__main__":
    sys.exit(main())
