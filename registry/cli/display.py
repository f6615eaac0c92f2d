"""What `hroot log/show/diff/ls` share: image references, the store opened for
reading, and values as JSON (registry.formats says how they print for people)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from registry.cli.common import fail, open_store
from storage import Store, StoreError, digests, names, repository


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
