"""The history page's graph, laid out for an inline SVG (no script draws it): the
repository's first-parent commits down one lane, and for each push built on an image of
another repository an edge from that base, beside the lane, into the commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.commitlog import Base as BaseImage
from storage.commitlog import Commit

LANE = 16  # x of the repository's own commits
BASE_LANE = 44  # x of the base images merged into them
TEXT = 72  # x where the words begin
LINE = 18  # height of a line of words
TOP = 22


@dataclass(frozen=True)
class Base:
    image: BaseImage
    shown: bool  # whether the caller may see its repository (else it is not named)
    merged: bool  # whether the commit has it as a lineage parent (only the first push on it)
    y: int


@dataclass(frozen=True)
class Row:
    entry: Commit
    y: int  # of the commit's dot and first line
    bases: list[Base]


@dataclass(frozen=True)
class Graph:
    rows: list[Row]
    height: int
    lane: int = LANE
    base_lane: int = BASE_LANE
    text: int = TEXT
    line: int = LINE


def draw(entries: list[Commit], shown: Callable[[str], bool]) -> Graph:
    """Rows newest first, each two lines high plus a line per base image."""
    rows = []
    y = TOP
    for entry in entries:
        bases = [
            Base(base, shown(base.repository), len(entry.parents) > 1, y + LINE * (2 + number))
            for number, base in enumerate(entry.bases)
        ]
        rows.append(Row(entry, y, bases))
        y += LINE * (3 + len(bases))
    return Graph(rows, y)
