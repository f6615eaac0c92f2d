"""Workloads on a real image series: 10 versions of a Debian root filesystem (bench/debian.py),
each one full-rootfs layer, pushed in order as `debian:v1`..`debian:v10`.

The harness's HTTP client pushes (blobs the registry lacks by monolithic PUT, then the
manifest) and pulls (every byte read, every digest checked), not skopeo: skopeo 1.9
gzips an uncompressed layer on its way to a docker:// destination, `--dest-decompress`
or not, and the uncompressed variant is the point of issue 15. Each round pushes the
series into an emptied registry, pulls the last version, then runs the registry's garbage
collection with the server stopped (hroot: `hroot gc --expiry 0`, then
`git gc --prune=now`; Distribution: `garbage-collect`) and measures its data folder.

With `hroot_args` hroot is started with more arguments. With `--fs-view '*'` (the
filesystem view of issue 12) it also times, after each push, how long until
`refs/hroot/fs/debian` has a commit whose `Image-Commit:` trailer names the branch's new
tip, and measures what the view adds on disk after gc (its refs deleted, gc again: the
difference), next to the compressed bytes of the layers it describes. The workload is
skipped, saying so, when `hroot serve --help` does not know the flag.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import debian
from bench.clients import ClientError, registry_client
from bench.images import Descriptor, Image, Layer, Layout, blob_file
from bench.servers import REPO_ROOT, Distribution, Hroot, Server, ServerError
from bench.workloads import Metrics, Workload, timed

GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_TYPE = "application/vnd.oci.image.layer.v1.tar"
MiB = 1 << 20
VIEW_TIMEOUT = 300.0
VIEW_POLL = 0.05


def hroot_serve_knows(flag: str) -> bool:
    """Whether `hroot serve --help` (this checkout's) lists the flag."""
    done = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return flag in done.stdout


class HrootWith(Hroot):
    """hroot serve with more arguments (e.g. `--fs-view '*'`)."""

    def __init__(self, home: Path, extra: list[str]) -> None:
        super().__init__(home)
        self.extra = extra

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


class DebianSeries(Workload):
    repo = "debian"
    rounds = 2

    def __init__(
        self,
        home: Path,
        number: int,
        versions: int,
        compressed: bool,
        hroot_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(home)
        self.number = number
        self.versions = min(versions, len(debian.RECIPE))
        self.compressed = compressed
        self.hroot_args = list(hroot_args)
        self.view = "--fs-view" in hroot_args
        layers = "gzip" if compressed else "uncompressed"
        self.title = (
            f"Debian series: {self.versions} versions of a bookworm rootfs (debootstrap "
            f"minbase, upgrade, + packages), one {layers} layer each: push in order, pull "
            f"of v{self.versions}, disk after gc"
        )
        if hroot_args:
            self.title += f"; hroot {' '.join(hroot_args)}"
        self.images: list[Image] = []
        self.compressed_bytes = 0  # of the gzip layers, whichever variant is pushed

    def params(self) -> dict[str, object]:
        return {
            "versions": self.versions,
            "layers": "gzip" if self.compressed else "uncompressed",
            "hroot_args": self.hroot_args,
            "recipe": debian.recipe_hash(),
        }

    def missing(self) -> list[str]:
        """What the machine lacks for this workload beyond its tools."""
        return debian.missing()

    def skip(self) -> str | None:
        """Why this workload cannot run with this checkout's hroot, if it cannot."""
        if self.view and not hroot_serve_knows("--fs-view"):
            return "`hroot serve --help` has no --fs-view: the filesystem view is not built yet"
        return None

    def servers(self) -> list[Server]:
        hroot = HrootWith(self.home / "hroot", self.hroot_args) if self.hroot_args else None
        return [hroot or Hroot(self.home / "hroot"), Distribution(self.home / "distribution")]

    def fill(self, layout: Layout) -> None:
        for version in debian.build()[: self.versions]:
            blob = version.gzip if self.compressed else version.tar
            target = blob_file(layout.path, blob.digest)
            if not target.exists():
                try:
                    os.link(blob.path, target)
                except OSError:
                    shutil.copyfile(blob.path, target)
            descriptor = Descriptor(
                GZIP_TYPE if self.compressed else TAR_TYPE, blob.digest, blob.size
            )
            self.images.append(
                layout.add_image(version.tag, [Layer(descriptor, version.tar.digest)])
            )
            self.compressed_bytes += version.gzip.size

    async def run_round(self, server: Server, number: int) -> Metrics:
        await server.reset()
        push = 0.0
        ready: list[float] = []
        last = self.images[-1]
        viewed = server if self.view and isinstance(server, Hroot) else None  # Distribution: none
        async with registry_client(server.url) as client:
            for index, image in enumerate(self.images):
                self.status = f"pushed {index} of {len(self.images)} versions"
                push += await timed(client.push_image(self.repo, image))
                if viewed is not None:
                    ready.append(await self._view_ready(viewed, time.perf_counter()))
            digest = await client.head_manifest(self.repo, last.tag)
            if digest != last.digest:
                raise ClientError(f"{self.repo}:{last.tag} is {digest}, pushed {last.digest}")
            self.status = f"pulling {last.tag}"
            pull = await timed(client.pull_image(self.repo, last.tag))
        before = server.disk_bytes()
        self.status = "gc"
        gc = await server.collect()
        if isinstance(server, Hroot):
            gc += await timed(server.git("gc", "--prune=now", "--quiet"))
        after = server.disk_bytes()
        metrics = {
            f"push {len(self.images)} versions (s)": push,
            f"pull {last.tag} (s)": pull,
            "disk before gc (MiB)": before / MiB,
            "gc, server stopped (s)": gc,
            "disk after gc (MiB)": after / MiB,
        }
        if viewed is not None:
            view_bytes = after - await self._disk_without_view(viewed)
            first, newest = self.images[0].tag, last.tag
            metrics |= {
                f"view ready after push of {first}, the first (s)": ready[0],
                f"view ready after push of {newest}, the largest (s)": ready[-1],
                "view ready after push, p50 (s)": statistics.median(ready),
                "view ready after push, max (s)": max(ready),
                "view: extra disk after gc (MiB)": view_bytes / MiB,
                "view / compressed layers": view_bytes / self.compressed_bytes,
            }
        return metrics

    async def _view_ready(self, server: Hroot, pushed: float) -> float:
        """Seconds from `pushed` (a push's end) until the view's last commit names the
        branch's tip in its Image-Commit trailer."""
        tip = (await server.git("rev-parse", f"refs/heads/hroot/{self.repo}")).strip()
        view = f"refs/hroot/fs/{self.repo}"
        trailer = "--format=%(trailers:key=Image-Commit,valueonly)"
        while time.perf_counter() - pushed < VIEW_TIMEOUT:
            try:
                named = (await server.git("log", "-1", trailer, view)).strip()
            except ServerError:  # no view ref yet
                named = ""
            if named and tip.startswith(named):
                return time.perf_counter() - pushed
            await asyncio.sleep(VIEW_POLL)
        raise ServerError(f"{view} did not reach image commit {tip} in {VIEW_TIMEOUT:.0f} s")

    async def _disk_without_view(self, server: Hroot) -> int:
        """The data folder's bytes once the view's refs are deleted and git gc ran again
        (the server is stopped; the next round starts on fresh data)."""
        refs = await server.git("for-each-ref", "--format=%(refname)", "refs/hroot/fs/")
        for ref in refs.split():
            await server.git("update-ref", "-d", ref)
        await server.git("gc", "--prune=now", "--quiet")
        return server.disk_bytes()
