"""What `hroot log/show/diff/ls` share: image references, the store opened for
reading, and how sizes, times, digests and values print for people and as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from registry.cli.common import fail, open_store
from storage import Store, StoreError, digests, names, repository

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_FULL_DIGEST = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")


@contextmanager
def reading(args: argparse.Namespace) -> Iterator[Store]:
    """The registry at --data, for a command that only reads it: a store error is one
    line on stderr and exit status 1, and a reader that stops early (`| head`) is fine."""
    store = open_store(args)
    try:
        yield store
    except StoreError as error:
        fail(repository.describe(error))
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
    finally:
        store.close()


def image_reference(text: str) -> tuple[str, str]:
    """`NAME:TAG`, `NAME@DIGEST`, or `NAME` for `NAME:latest` as docker reads it ->
    (name, tag or digest); StoreError if one is invalid."""
    name, at, digest = text.partition("@")
    if at:
        return names.check_name(name), str(digests.parse(digest))
    name, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon was a registry host's port
        name, tag = text, "latest"
    return names.check_name(name), names.check_tag(tag)


def size(n: int | None) -> str:
    """Bytes in binary units for people: 512 B, 1.2 MiB."""
    if n is None:
        return "?"
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def signed_size(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else "±") + size(abs(n))


def when(moment: datetime) -> str:
    """UTC, to the second: 2026-11-29 19:20:01."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def short(digest: str | None) -> str:
    """sha256 and its first 12 hex digits, as people quote a digest."""
    return "-" if digest is None else _FULL_DIGEST.sub(r"\1", digest)


def value(item: Any) -> str:
    """A config value on one line: lists as JSON, nothing as `-`."""
    if item is None or item == [] or item == {}:
        return "-"
    return item if isinstance(item, str) else json.dumps(item)


def jsonable(item: Any) -> Any:
    """Dataclasses as objects, times as ISO 8601: what print_json can write."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: jsonable(getattr(item, f.name)) for f in dataclasses.fields(item)}
    if isinstance(item, dict):
        return {str(k): jsonable(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [jsonable(v) for v in item]
    if isinstance(item, datetime):
        return item.isoformat()
    return item
