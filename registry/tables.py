"""The arrays of tables of the config file ([[access]], [[upstream]], [[webhook]]), each
checked the same way before its own parser reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def tables(
    value: Any, kind: str, each: str, keys: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each table of `[[kind]]` in `value`, with where it is for messages (`each N`);
    a key outside `keys` is refused."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"it must be a list of tables ([[{kind}]])")
    for n, table in enumerate(value, 1):
        where = f"{each} {n}"
        unknown = set(table) - keys
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        yield where, table
