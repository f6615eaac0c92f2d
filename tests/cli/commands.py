"""Running `hroot` as a user does, for the command tests: `python -m registry ARGS`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hroot(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m registry ARGS` from the checkout, to its end (a minute at most)."""
    return subprocess.run(
        [sys.executable, "-m", "registry", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
