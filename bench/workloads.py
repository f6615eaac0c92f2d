"""The ten workloads. Each builds its images once, then times rounds against one server.

A workload's `build()` writes the images it pushes (untimed, shared by both registries);
`prepare()` runs once per registry after it starts and may return one-off timings;
`run_round()` returns the timings of one round. Every metric is lower-is-better.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import ClassVar, TypeVar

from bench import webpages
from bench.clients import ClientError, RegistryClient, registry_client, skopeo_copy
from bench.images import Image, Layer, Layout, manifest_json
from bench.report import human_bytes
from bench.servers import Distribution, Hroot, ProxyDistribution, ProxyHroot, Server

Metrics = dict[str, float]
T = TypeVar("T")
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def scaled(value: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(value * scale))


async def timed(job: Awaitable[object]) -> float:
    start = time.perf_counter()
    await job
    return time.perf_counter() - start


async def bounded(limit: int, jobs: Iterable[Awaitable[T]]) -> list[T]:
    """Awaits the jobs with at most `limit` in flight; the first failure cancels the rest."""
    pending = iter(jobs)
    results: list[T] = []

    async def worker() -> None:
        for job in pending:
            results.append(await job)

    async with asyncio.TaskGroup() as group:
        for _ in range(limit):
            group.create_task(worker())
    return results


class Workload:
    number: int
    title: str
    rounds = 3
    tools: tuple[str, ...] = ()  # programs it runs besides the registries
    status = ""  # how far a long step has got, for progress lines and timeout errors
    writers = 8  # requests in flight while a workload fills a registry

    def __init__(self, home: Path) -> None:
        self.home = home  # its images, its servers' folders; removed once it has run
        self.layout = home / "layout"

    def params(self) -> dict[str, object]:
        return {}

    def skip(self) -> str | None:
        """Why this checkout cannot run the workload at all, if it cannot."""
        return None

    def missing(self) -> list[str]:
        """What the machine lacks for the workload, each with how to get it."""
        return []

    def servers(self) -> list[Server]:
        """The registries compared, hroot first."""
        return [Hroot(self.home / "hroot"), Distribution(self.home / "distribution")]

    async def start(self) -> None:
        """Starts what the workload needs beside the registries, before them."""

    async def stop(self) -> None:
        """Stops what `start` started, after the registries."""

    def build(self) -> None:
        """Writes the images to push; blocking, run once before any server starts."""
        layout = Layout(self.layout)
        self.fill(layout)
        layout.save()

    def fill(self, layout: Layout) -> None:
        raise NotImplementedError

    async def prepare(self, server: Server) -> Metrics:
        return {}

    async def run_round(self, server: Server, number: int) -> Metrics:
        raise NotImplementedError

    async def populate(self, what: str, jobs: Iterable[Awaitable[None]], total: int) -> float:
        """Awaits the jobs `writers` at a time, keeping `status` current; returns the seconds."""
        start = time.perf_counter()
        done = 0

        async def counted(job: Awaitable[None]) -> None:
            nonlocal done
            await job
            done += 1
            self.status = f"{done} of {total} {what} in {time.perf_counter() - start:.0f} s"

        await bounded(self.writers, (counted(job) for job in jobs))
        return time.perf_counter() - start


class SkopeoPushPull(Workload):
    """skopeo copy oci: → docker:// and back into a fresh oci: folder, on a fresh registry."""

    tools = ("skopeo",)

    def __init__(self, home: Path, number: int, layers: int, layer_size: int) -> None:
        super().__init__(home)
        self.number = number
        self.layers = layers
        self.layer_size = layer_size
        self.title = f"skopeo, {layers} layer(s) of {human_bytes(layer_size)} random"

    def params(self) -> dict[str, object]:
        return {"layers": self.layers, "layer_bytes": self.layer_size}

    def fill(self, layout: Layout) -> None:
        layout.add_image(
            "v1", [layout.add_random_layer(self.layer_size, seed) for seed in range(self.layers)]
        )

    async def run_round(self, server: Server, number: int) -> Metrics:
        # skopeo remembers where it pushed each blob and would mount instead of uploading.
        await server.reset()
        remote = f"docker://127.0.0.1:{server.port}/bench/image:v1"
        pulled = self.home / f"pulled-{server.name}"
        push = await timed(skopeo_copy(f"oci:{self.layout}:v1", remote))
        pull = await timed(skopeo_copy(remote, f"oci:{pulled}:v1"))
        shutil.rmtree(pulled)
        return {"push (s)": push, "pull (s)": pull}


class ConcurrentPulls(Workload):
    number = 3
    repo = "bench/pulls"

    def __init__(self, home: Path, pulls: int, size: int) -> None:
        super().__init__(home)
        self.pulls = pulls
        self.size = size
        self.title = f"{pulls} concurrent pulls of a {human_bytes(size)} image (aiohttp)"
        self.image: Image | None = None

    def params(self) -> dict[str, object]:
        return {"pulls": self.pulls, "layer_bytes": self.size}

    def fill(self, layout: Layout) -> None:
        self.image = layout.add_image("v1", [layout.add_random_layer(self.size, 0)])

    async def prepare(self, server: Server) -> Metrics:
        assert self.image is not None
        async with registry_client(server.url) as client:
            return {"push (s)": await timed(client.push_image(self.repo, self.image))}

    async def run_round(self, server: Server, number: int) -> Metrics:
        async with registry_client(server.url, self.pulls) as client:
            pulls = [client.pull_image(self.repo, "v1") for _ in range(self.pulls)]
            return {f"{self.pulls} pulls (s)": await timed(asyncio.gather(*pulls))}


class ConcurrentPushes(Workload):
    """Clients push different tags of one repository at once; every tag must be listed."""

    number = 4
    rounds = 20
    repo = "bench/pushes"

    def __init__(self, home: Path, clients: int, size: int) -> None:
        super().__init__(home)
        self.clients = clients
        self.size = size
        self.title = (
            f"{clients} clients push different tags into one repository "
            f"({human_bytes(size)} layer each)"
        )
        self.images: list[list[Image]] = []

    def params(self) -> dict[str, object]:
        return {"clients": self.clients, "layer_bytes": self.size}

    def fill(self, layout: Layout) -> None:
        for number in range(self.rounds):
            seeds = range(number * self.clients, (number + 1) * self.clients)
            self.images.append(
                [
                    layout.add_image(
                        f"r{number:03d}-c{seed % self.clients}",
                        [layout.add_random_layer(self.size, seed)],
                    )
                    for seed in seeds
                ]
            )

    async def run_round(self, server: Server, number: int) -> Metrics:
        images = self.images[number]
        async with registry_client(server.url, self.clients) as client:
            pushes = [client.push_image(self.repo, image) for image in images]
            seconds = await timed(asyncio.gather(*pushes))
            listed = set(await client.tags(self.repo))
        expected = {image.tag for done in self.images[: number + 1] for image in done}
        if missing := expected - listed:
            raise ClientError(f"pushed tags missing from the tags list: {sorted(missing)}")
        return {f"round of {self.clients} pushes (s)": seconds}


class ManifestLatency(Workload):
    """HEAD by tag and GET by digest, as a pull does, with many requests in flight."""

    number = 5
    rounds = 5
    repo = "bench/latency"

    def __init__(self, home: Path, concurrency: int, requests: int) -> None:
        super().__init__(home)
        self.concurrency = concurrency
        self.requests = requests
        self.title = (
            f"manifest latency, {requests} HEAD then {requests} GET, {concurrency} in flight"
        )
        self.image: Image | None = None

    def params(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "requests": self.requests}

    def fill(self, layout: Layout) -> None:
        self.image = layout.add_image("v1", [layout.add_random_layer(KiB, 0)])

    async def prepare(self, server: Server) -> Metrics:
        assert self.image is not None
        async with registry_client(server.url) as client:
            await client.push_image(self.repo, self.image)
        return {}

    async def run_round(self, server: Server, number: int) -> Metrics:
        assert self.image is not None
        digest = self.image.digest
        async with registry_client(server.url, self.concurrency) as client:
            heads = await self._latencies(
                client.head_manifest(self.repo, "v1") for _ in range(self.requests)
            )
            gets = await self._latencies(
                client.get_manifest(self.repo, digest) for _ in range(self.requests)
            )
        return {
            "HEAD p50 (ms)": heads[49],
            "HEAD p99 (ms)": heads[98],
            "GET p50 (ms)": gets[49],
            "GET p99 (ms)": gets[98],
        }

    async def _latencies(self, requests: Iterable[Awaitable[object]]) -> list[float]:
        """The percentiles 1..99 of the requests' latencies, in milliseconds."""
        seconds = await bounded(self.concurrency, (timed(request) for request in requests))
        return statistics.quantiles([s * 1000 for s in seconds], n=100)


class ManyTagsAndRepositories(Workload):
    """Tags list and paged catalog, warm and from a cold start, on a big registry."""

    number = 6
    repo = "bench/tags"
    page = 100

    def __init__(self, home: Path, tags: int, repositories: int) -> None:
        super().__init__(home)
        self.tags = tags
        self.repositories = repositories
        self.title = (
            f"{tags} tags in one repository, {repositories} repositories "
            f"(catalog pages of {self.page})"
        )
        self.image: Image | None = None

    def params(self) -> dict[str, object]:
        return {
            "tags": self.tags,
            "repositories": self.repositories,
            "page": self.page,
            "writers": self.writers,
        }

    def fill(self, layout: Layout) -> None:
        self.image = layout.add_image("base", [layout.add_random_layer(KiB, 0)])

    def _tiny_manifest(self, tag: str) -> bytes:
        """The base image's manifest made unique by an annotation."""
        assert self.image is not None
        config, *layers = self.image.blobs
        return manifest_json(config, layers, {"org.example.hroot-bench.tag": tag})

    async def _populate_repository(self, client: RegistryClient, repo: str) -> None:
        assert self.image is not None
        for blob in self.image.blobs:
            await client.upload_blob(repo, blob, self.image.blob_file(blob), mount_from=self.repo)
        await client.put_manifest(repo, "v1", self.image.manifest)

    async def prepare(self, server: Server) -> Metrics:
        assert self.image is not None
        async with registry_client(server.url, self.writers) as client:
            await client.push_image(self.repo, self.image)
            tags = await self.populate(
                "tags",
                (
                    client.put_manifest(self.repo, tag, self._tiny_manifest(tag))
                    for tag in (f"t{n:05d}" for n in range(self.tags))
                ),
                self.tags,
            )
            repositories = await self.populate(
                "repositories",
                (
                    self._populate_repository(client, f"bench/r{n:05d}")
                    for n in range(self.repositories)
                ),
                self.repositories,
            )
        return {
            f"populate {self.tags} tags (s)": tags,
            f"populate {self.repositories} repositories (s)": repositories,
        }

    async def run_round(self, server: Server, number: int) -> Metrics:
        cold_tags = await server.restart(f"/v2/{self.repo}/tags/list")
        cold_catalog = await server.restart(f"/v2/_catalog?n={self.page}")
        async with registry_client(server.url) as client:
            start = time.perf_counter()
            await client.tags(self.repo)
            first = time.perf_counter()
            tags = await client.tags(self.repo)
            listed = time.perf_counter()
            repositories = await client.catalog(self.page)
            paged = time.perf_counter()
        if len(tags) != self.tags + 1 or len(repositories) != self.repositories + 1:
            raise ClientError(
                f"listed {len(tags)} tags and {len(repositories)} repositories, "
                f"pushed {self.tags + 1} and {self.repositories + 1}"
            )
        metrics = {
            "cold start to tags list (s)": cold_tags,
            "cold start to catalog page (s)": cold_catalog,
            "first tags list after a restart (s)": first - start,
            "tags list (s)": listed - first,
            "paged catalog (s)": paged - listed,
        }
        if isinstance(server, Hroot):  # the web pages (registry.ui): hroot's alone
            metrics |= await webpages.page_times(
                server.url,
                self.repo,
                f"bench/r{self.repositories // 2:05d}",
                f"t{self.tags // 2:05d}",
                f"t{self.tags - 1:05d}",
            )
        if number == self.rounds - 1:  # last: the other rounds time the unpacked registry
            metrics["gc, server stopped (s)"] = await server.collect(untagged=True)
        return metrics


class DiskCorpus(Workload):
    """Versions of an image where each changes one layer, pushed in order to a fresh registry."""

    number = 7
    repo = "bench/corpus"

    def __init__(self, home: Path, versions: int, layers: int, size: int) -> None:
        super().__init__(home)
        self.versions = versions
        self.layers = layers
        self.size = size
        distinct = (layers + versions - 1) * size
        self.title = (
            f"disk after {versions} versions of {layers} layers of "
            f"{human_bytes(size)} ({human_bytes(distinct)} of distinct layers)"
        )
        self.images: list[Image] = []

    def params(self) -> dict[str, object]:
        return {"versions": self.versions, "layers": self.layers, "layer_bytes": self.size}

    def fill(self, layout: Layout) -> None:
        cache: dict[int, Layer] = {}
        seeds = list(range(self.layers))
        for version in range(self.versions):
            if version:
                seeds[version % self.layers] = self.layers + version
            for seed in seeds:
                if seed not in cache:
                    cache[seed] = layout.add_random_layer(self.size, seed)
            self.images.append(layout.add_image(f"v{version}", [cache[s] for s in seeds]))

    async def run_round(self, server: Server, number: int) -> Metrics:
        await server.reset()
        async with registry_client(server.url) as client:
            start = time.perf_counter()
            for image in self.images:
                await client.push_image(self.repo, image)
            seconds = time.perf_counter() - start
        return {
            f"push {self.versions} versions (s)": seconds,
            "disk (MiB)": server.disk_bytes() / MiB,
        }


class PushAtScale(Workload):
    """Manifest push latency into a small registry, then into a big one: the commit and
    the lineage lookup of a 3-layer image built on a base image, its layers uploaded
    beforehand. Every other repository holds an image on the same base, so a registry
    that searched them all for the base would slow down with their number."""

    number = 8
    base_repo = "bench/base"
    repo = "bench/push"

    def __init__(self, home: Path, small: int, large: int, pushes: int) -> None:
        super().__init__(home)
        self.small = small
        self.large = large
        self.pushes = pushes
        self.title = (
            f"manifest push of a 3-layer image at {small:,} and {large:,} repositories "
            f"({pushes} pushes a round, one at a time)"
        )
        self.base: Image | None = None
        self.image: Image | None = None
        self.others: list[Image] = []  # one image per other repository
        self.small_p50: dict[str, float] = {}  # by server name, for the ratio

    def params(self) -> dict[str, object]:
        return {"small": self.small, "large": self.large, "pushes": self.pushes, "layers": 3}

    def fill(self, layout: Layout) -> None:
        base_layers = [layout.add_random_layer(KiB, seed) for seed in range(2)]
        self.base = layout.add_image("base", base_layers)
        self.image = layout.add_image("v1", [*base_layers, layout.add_random_layer(KiB, 2)])
        self.others = [
            layout.add_image(f"r{n:05d}", [*base_layers, layout.add_random_layer(KiB, 3 + n)])
            for n in range(self.large - 2)  # besides the base and the pushed-to repositories
        ]

    async def prepare(self, server: Server) -> Metrics:
        assert self.base is not None and self.image is not None
        async with registry_client(server.url, self.writers) as client:
            await client.push_image(self.base_repo, self.base)
            await client.push_image(self.repo, self.image)  # uploads every layer pushed later
            await self._populate(client, self.others[: self.small - 2])
            batches = [await self._pushes(client, f"small{n}") for n in range(self.rounds)]
            await self._populate(client, self.others[self.small - 2 :])
        p50 = statistics.median(p50 for p50, _ in batches)
        self.small_p50[server.name] = p50
        return {
            f"push at {self.small:,} repositories p50 (ms)": p50,
            f"push at {self.small:,} repositories p99 (ms)": statistics.median(
                p99 for _, p99 in batches
            ),
        }

    async def run_round(self, server: Server, number: int) -> Metrics:
        await server.restart()
        async with registry_client(server.url) as client:
            first = await timed(self._push(client, f"first{number}"))
            p50, p99 = await self._pushes(client, f"round{number}")
        return {
            f"push at {self.large:,} repositories p50 (ms)": p50,
            f"push at {self.large:,} repositories p99 (ms)": p99,
            f"p50 at {self.large:,} / p50 at {self.small:,}": p50 / self.small_p50[server.name],
            "first push after a restart (ms)": first * 1000,
        }

    async def _populate(self, client: RegistryClient, images: list[Image]) -> None:
        """One repository per image, its base layers mounted from the base repository."""

        async def one(image: Image) -> None:
            repo = f"bench/{image.tag}"
            for blob in image.blobs:
                await client.upload_blob(
                    repo, blob, image.blob_file(blob), mount_from=self.base_repo
                )
            await client.put_manifest(repo, "v1", image.manifest)

        await self.populate("repositories", map(one, images), len(images))

    def _push(self, client: RegistryClient, tag: str) -> Awaitable[None]:
        """The image made unique by an annotation, so that every push is a new manifest."""
        assert self.image is not None
        config, *layers = self.image.blobs
        body = manifest_json(config, list(layers), {"org.example.hroot-bench.push": tag})
        return client.put_manifest(self.repo, tag, body)

    async def _pushes(self, client: RegistryClient, prefix: str) -> tuple[float, float]:
        """p50 and p99 of `pushes` manifest pushes one after another, in milliseconds."""
        seconds = [await timed(self._push(client, f"{prefix}-{n}")) for n in range(self.pushes)]
        percentiles = statistics.quantiles([s * 1000 for s in seconds], n=100)
        return percentiles[49], percentiles[98]


class Retention(DiskCorpus):
    """Disk after versions of an image pushed under one tag, each changing one layer, and
    after an offline gc under each retention setting, each on a copy of those pushes.

    Distribution keeps no history: its "history" row is its plain garbage-collect and
    its "both" row its --delete-untagged, the nearest it has."""

    number = 9
    repo = "bench/retained"
    # name -> (drop untagged manifests, commits of history to keep)
    settings: ClassVar[dict[str, tuple[bool, int | None]]] = {
        "no retention": (False, None),
        "untagged": (True, None),
        "history": (False, 1),
        "both": (True, 1),
    }

    def __init__(self, home: Path, versions: int, layers: int, size: int) -> None:
        super().__init__(home, versions, layers, size)
        self.title = (
            f"disk after {versions} pushes of one tag, each changing one of {layers} layers "
            f"of {human_bytes(size)}, and after gc (--drop-untagged 0 / --keep-commits 1)"
        )

    async def run_round(self, server: Server, number: int) -> Metrics:
        await server.reset()
        async with registry_client(server.url) as client:
            for image in self.images:
                await client.push_image(self.repo, image, tag="latest")
        await server.stop()
        await asyncio.sleep(2)  # git prunes what is older than the expiry's whole second
        pushed = self.home / f"{server.name}-pushed"
        shutil.rmtree(pushed, ignore_errors=True)
        shutil.copytree(server.data, pushed, symlinks=True)
        metrics = {f"disk after {self.versions} pushes (MiB)": server.disk_bytes() / MiB}
        for name, (untagged, keep_commits) in self.settings.items():
            shutil.rmtree(server.data)
            shutil.copytree(pushed, server.data, symlinks=True)
            seconds = await server.collect(untagged, keep_commits)
            metrics[f"disk after gc, {name} (MiB)"] = server.disk_bytes() / MiB
            metrics[f"gc, {name} (s)"] = seconds
        shutil.rmtree(pushed)
        await server.start()
        return metrics


class PullThrough(Workload):
    """skopeo pulls through each registry as a pull-through cache of a Distribution on
    loopback: hroot `--proxy`, Distribution `proxy.remoteurl`. Each round starts on fresh
    data: the same pull straight from the upstream, then a cold pull through the proxy
    (fetched, stored and served at once; its ratio to the direct pull is the proxy's cost,
    hroot's target at most 1.15), then a warm one, once the proxy has stored the image."""

    number = 10
    repo = "bench/proxied"
    tools = ("skopeo",)

    def __init__(self, home: Path, layers: int, size: int) -> None:
        super().__init__(home)
        self.layers = layers
        self.size = size
        self.title = (
            f"pull-through proxy of a Distribution upstream, skopeo, {layers} layers of "
            f"{human_bytes(size)}"
        )
        self.upstream = Distribution(home / "upstream")
        self.image: Image | None = None

    def params(self) -> dict[str, object]:
        return {"layers": self.layers, "layer_bytes": self.size}

    def servers(self) -> list[Server]:
        return [
            ProxyHroot(self.home / "hroot", self.upstream),
            ProxyDistribution(self.home / "distribution", self.upstream),
        ]

    def fill(self, layout: Layout) -> None:
        layers = [layout.add_random_layer(self.size, seed) for seed in range(self.layers)]
        self.image = layout.add_image("v1", layers)

    async def start(self) -> None:
        assert self.image is not None
        await self.upstream.start()
        async with registry_client(self.upstream.url) as client:
            await client.push_image(self.repo, self.image)

    async def stop(self) -> None:
        await self.upstream.stop()

    async def run_round(self, server: Server, number: int) -> Metrics:
        await server.reset()
        direct = await self._pull(self.upstream)
        cold = await self._pull(server)
        await server.cached(self.repo)
        warm = await self._pull(server)
        return {
            "pull straight from upstream (s)": direct,
            "cold pull through the proxy (s)": cold,
            "cold / straight": cold / direct,
            "warm pull through the proxy (s)": warm,
        }

    async def _pull(self, server: Server) -> float:
        """skopeo copy of the image from `server` into a fresh OCI layout; the seconds."""
        pulled = self.home / "pulled"
        remote = f"docker://127.0.0.1:{server.port}/{self.repo}:v1"
        seconds = await timed(skopeo_copy(remote, f"oci:{pulled}:v1"))
        shutil.rmtree(pulled)
        return seconds
