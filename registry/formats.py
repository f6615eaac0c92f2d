"""How sizes, times, digests and config values read for people: the same in the
command line's output (registry.cli) and on the web pages (registry.ui)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from storage.history import ConfigDiff

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_FULL_DIGEST = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")


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


def config_lines(config: ConfigDiff) -> list[str]:
    """What changed between two configs, a line each, as `hroot diff` says it."""
    lines = [
        f"{name.replace('_', ' ')}: {value(change.old)} -> {value(change.new)}"
        for name, change in config.changed.items()
    ]
    lines += [f"env added: {item}" for item in config.env.added]
    lines += [f"env removed: {item}" for item in config.env.removed]
    lines += [f"port added: {item}" for item in config.exposed_ports.added]
    lines += [f"port removed: {item}" for item in config.exposed_ports.removed]
    labels = config.labels
    lines += [f"label added: {key}={text}" for key, text in labels.added.items()]
    lines += [f"label removed: {key}={text}" for key, text in labels.removed.items()]
    lines += [
        f"label changed: {key}: {change.old} -> {change.new}"
        for key, change in labels.changed.items()
    ]
    return lines
