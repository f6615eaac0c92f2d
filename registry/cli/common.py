"""What the commands share: the repository option, opening the store, output, errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from registry.config import Config, ConfigError, load_config
from storage import Store, StoreError, repository


class CommandError(Exception):
    """A one-line reason a command cannot do what it was asked; exit status 1."""


def add_data_option(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    parser.add_argument(
        "--data",
        metavar="PATH",
        help=f"the bare git repository holding the registry (env HROOT_DATA; "
        f"default ./{defaults.data})",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file of `hroot serve`; its `data` is used"
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def data_path(args: argparse.Namespace) -> Path:
    """--data, else the config file's `data`, else HROOT_DATA, else ./hroot.git."""
    try:
        return load_config(args.config, data=args.data).data
    except ConfigError as e:
        fail(str(e), status=2)


def open_store(args: argparse.Namespace, create: bool = False) -> Store:
    """The registry at --data; only a command that writes (import) may create one."""
    path = data_path(args)
    try:
        return Store.open(path, create=create)
    except FileNotFoundError:
        fail(f"{path}: no registry here (give --data or set HROOT_DATA)")
    except StoreError as e:
        fail(repository.describe(e))


@contextmanager
def one_line_errors(subject: str | Path) -> Iterator[None]:
    """A store error, or an OSError of `subject`, ends the command in one line, status 1."""
    try:
        yield
    except StoreError as e:
        fail(repository.describe(e))
    except OSError as e:
        fail(f"{subject}: {e.strerror or e}")


@contextmanager
def opened(
    args: argparse.Namespace, subject: str | Path | None = None, create: bool = False
) -> Iterator[Store]:
    """The registry at --data for the length of a command (display.reading is the
    readers'): a store error, or an OSError of `subject` (by default the registry's), is
    one line on stderr and exit status 1."""
    store = open_store(args, create=create)
    try:
        with one_line_errors(subject if subject is not None else store.path):
            yield store
    finally:
        store.close()


def fail(message: str, status: int = 1) -> NoReturn:
    print(f"hroot: {message}", file=sys.stderr)
    raise SystemExit(status)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
