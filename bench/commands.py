"""A command line tool run to its end, for the bench's clients and servers alike."""

from __future__ import annotations

import asyncio


async def output(*command: str, error: type[Exception]) -> str:
    """The stdout of `command`; `error` with its stderr if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise error(f"{' '.join(command)}: {err.decode().strip()}")
    return out.decode()
