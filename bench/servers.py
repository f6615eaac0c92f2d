"""The two registries as processes: start on a free loopback port, wait for an answer, stop.

Each server owns a data folder. `peak_rss` is the highest VmHWM (peak resident set) of
every process it started, read from /proc just before each stop; `disk_bytes()` is what
its data folder holds on disk, counted in allocated blocks as `du` does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from bench.commands import output
from storage import names

READY_TIMEOUT = 60.0
POLL_INTERVAL = 0.005
STOP_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under path, each inode counted once."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


class ServerError(RuntimeError):
    pass


class Server:
    """One registry process at a time over one data folder; a start picks a new port."""

    name: str

    async def settle(self) -> None:
        """Wait for the server's own background upkeep to end (Distribution has none)."""

    async def cached(self, name: str) -> None:
        """Wait until what a pull through this proxy fetched of `name` is stored
        (Distribution's proxy stores a blob as it serves it)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / "data"
        self.log = home / "server.log"
        self.port = 0
        self.peak_rss = 0
        self._proc: asyncio.subprocess.Process | None = None
        home.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self, probe: str = "/v2/") -> float:
        """Starts the process; returns the seconds from spawn to a 200 answer to `probe`."""
        self.port = free_port()
        command = self.command()
        with self.log.open("ab") as log:
            log.write(f"\n--- {' '.join(command)}\n".encode())
            log.flush()
            started = time.perf_counter()
            self._proc = await asyncio.create_subprocess_exec(
                *command, cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            await self._wait_ready(probe)
        except BaseException:
            await self.stop()
            raise
        return time.perf_counter() - started

    async def _wait_ready(self, probe: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while True:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise ServerError(
                        f"{self.name} exited with {self._proc.returncode}: {self.log_tail()}"
                    )
                try:
                    async with session.get(self.url + probe) as response:
                        await response.read()
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"{self.name} gave no 200 to GET {probe} within "
                        f"{READY_TIMEOUT:.0f} s: {self.log_tail()}"
                    )
                await asyncio.sleep(POLL_INTERVAL)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        self.peak_rss = max(self.peak_rss, vm_hwm(proc.pid))
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def gc_command(self, untagged: bool, keep_commits: int | None) -> list[str]:
        """The registry's own offline garbage collection, dropping untagged manifests if
        asked; `keep_commits` is hroot's history retention (Distribution keeps none)."""
        raise NotImplementedError

    async def collect(self, untagged: bool = False, keep_commits: int | None = None) -> float:
        """Stop the server and run its garbage collection on the data; the seconds it took.
        The server stays stopped (Distribution's gc must not run beside it)."""
        await self.stop()
        command = self.gc_command(untagged, keep_commits)
        with self.log.open("ab") as log:
            log.write(f"\n--- {' '.join(command)}\n".encode())
            log.flush()
            started = time.perf_counter()
            done = await asyncio.create_subprocess_exec(
                *command, cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
            if await done.wait() != 0:
                raise ServerError(
                    f"{self.name} gc exited with {done.returncode}: {self.log_tail()}"
                )
        return time.perf_counter() - started

    async def restart(self, probe: str = "/v2/") -> float:
        """A cold start on the same data; returns the seconds to the first answer to `probe`."""
        await self.stop()
        return await self.start(probe)

    async def reset(self) -> None:
        """Restarts on an empty data folder."""
        await self.stop()
        shutil.rmtree(self.data)
        self.data.mkdir()
        await self.start()

    def disk_bytes(self) -> int:
        return disk_usage(self.data)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Hroot(Server):
    name = "hroot"

    async def git(self, *args: str) -> str:
        """git on the data folder (a bare repository); its stdout."""
        return await output("git", "--git-dir", str(self.data), *args, error=ServerError)

    async def settle(self, timeout: float = 600) -> None:
        """Wait for a `git gc --auto` hroot started (git holds gc.pid while it runs): a
        populated registry (10,000 tags, 2,000 repositories) starts one, and a round
        timed beside it would time the packing too."""
        deadline = time.monotonic() + timeout
        while (self.data / "gc.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "registry",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data",
            str(self.data),
        ]

    def gc_command(self, untagged: bool, keep_commits: int | None) -> list[str]:
        """`hroot gc` with expiry 0: safe here, with the server stopped."""
        command = [
            sys.executable,
            "-m",
            "registry",
            "gc",
            "--expiry",
            "0",
            "--data",
            str(self.data),
        ]
        if untagged:
            command += ["--drop-untagged", "0"]
        if keep_commits is not None:
            command += ["--keep-commits", str(keep_commits)]
        return command


class Distribution(Server):
    name = "distribution"

    def command(self) -> list[str]:
        return ["docker-registry", "serve", str(self._config())]

    def gc_command(self, untagged: bool, keep_commits: int | None) -> list[str]:
        flags = ["--delete-untagged"] if untagged else []
        return ["docker-registry", "garbage-collect", *flags, str(self._config())]

    def config_text(self) -> str:
        return DISTRIBUTION_CONFIG.format(data=self.data, port=self.port)

    def _config(self) -> Path:
        config = self.home / "config.yml"
        config.write_text(self.config_text())
        return config


class ProxyHroot(Hroot):
    """`hroot serve --proxy`: a pull-through cache of `upstream`, every name its."""

    def __init__(self, home: Path, upstream: Server) -> None:
        super().__init__(home)
        self.upstream = upstream

    def command(self) -> list[str]:
        return [*super().command(), "--proxy", self.upstream.url]

    async def cached(self, name: str, timeout: float = 60) -> None:
        """hroot commits a proxied image in the background, once its blobs are stored."""
        ref = names.branch_ref(name).decode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.git("for-each-ref", "--format=%(refname)", ref):
                return
            await asyncio.sleep(POLL_INTERVAL)
        raise ServerError(f"hroot did not commit {name} within {timeout:.0f} s")


class ProxyDistribution(Distribution):
    """Distribution in proxy mode (`proxy.remoteurl`), a pull-through cache of `upstream`."""

    def __init__(self, home: Path, upstream: Server) -> None:
        super().__init__(home)
        self.upstream = upstream

    def config_text(self) -> str:
        return super().config_text() + f"proxy:\n  remoteurl: {self.upstream.url}\n"
