"""A progress bar for long copies (`hroot import`, `hroot export`): on a terminal only.

Piped or redirected, stderr gets nothing extra, so scripts see the same output as before.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from storage.archives import Progress


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A byte counter on stderr, fed as storage.archives reports (done, total)."""
    with tqdm(
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    ) as bar:

        def update(done: int, total: int) -> None:
            if bar.total != total:  # known once the images are read: draw it at once
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        yield update
