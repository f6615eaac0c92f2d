"""A full disk as a store error: ENOSPC and EDQUOT become StorageFull, and a write whose
size is known is refused before it starts when it would leave less than a margin free.

Whatever the failed operation wrote is removed by that operation (an upload's spool,
temporary objects, a batch's temporaries), so the space comes back with the error and
the next push after space returns works with no restart.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from storage.errors import StorageFull

P = ParamSpec("P")
T = TypeVar("T")

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(exc: BaseException) -> bool:
    """Whether an error is the filesystem (or the owner's quota) having no room left."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def full(path: Path, needed: int | None = None) -> StorageFull:
    """StorageFull with what is free (and needed, when known) as its detail."""
    detail: dict[str, int] = {"free_bytes": free_bytes(path)}
    if needed is not None:
        detail["needed_bytes"] = needed
    return StorageFull(detail)


def ensure_room(path: Path, size: int, margin: int) -> None:
    """StorageFull unless `size` bytes fit on `path`'s filesystem leaving `margin` free:
    refused up front, before a byte of a body that cannot fit is received."""
    if size + margin > free_bytes(path):
        raise full(path, size + margin)


class HasPath(Protocol):
    path: Path


S = TypeVar("S", bound=HasPath)


def raises_storage_full(
    method: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[S, P], T]:
    """Decorate a write of a store (anything with a `path` on its filesystem) so that a
    full disk raises StorageFull; the write itself removes what it wrote."""

    @functools.wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if is_full(exc):
                raise full(self.path) from exc
            raise

    return wrapper
