"""The `hroot` command: one module per subcommand, each with `add_parser` and `run`.

`hroot serve` runs the registry; the others read or write the repository directly
(`--data`), also while a server runs on it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from registry.cli import (
    bundle,
    diff,
    export,
    fs,
    fsck,
    gc,
    import_,
    log,
    ls,
    rm,
    serve,
    show,
    sync,
)

# In the order `hroot --help` lists them.
COMMANDS: list[ModuleType] = [
    serve,
    log,
    show,
    diff,
    ls,
    rm,
    fs,
    import_,
    export,
    bundle,
    sync,
    fsck,
    gc,
]


def _version() -> str:
    try:
        return version("hroot")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hroot",
        description="hroot: a container registry that keeps every image in git.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hroot {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = command.add_parser(subparsers)
        sub.set_defaults(run=command.run, parser=sub)
    parser.epilog = "`hroot COMMAND --help` shows a command's options."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Unknown flags are reported by the subcommand's own parser, with its own usage.
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help()
        return 2
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
