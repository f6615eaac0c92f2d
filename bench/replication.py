"""Replication: how soon a follower serves a push, and what one push costs it to fetch.

A primary and two followers (`hroot serve --follow`), one fetching from the primary's
/git/ endpoint, one from the path of its repository, all on loopback ports. The primary
first gets one big image (`fill`, ~1 GiB by default), which the followers fetch in full;
then small images are pushed over HTTP one at a time, and each follower is watched:

- pull: a manifest GET right after the push is acknowledged (201), repeated on 404: what
  a client pulling from the follower sees. Its first miss makes the follower fetch at once,
  so this is one fetch's time. A push comes MISS_EVERY seconds after the followers
  showed the last one, or their rate limit of such fetches would be what is measured.
- periodic: tags/list polled until the tag is listed; tags/list starts no fetch, so this
  is the periodic fetch alone, about half an interval plus a fetch.

The bytes one more small push costs a follower are the new files in its objects/ folder
(loose objects or a pack, as git wrote them), next to what the push added to the
primary's objects/ folder. Neither hroot nor git logs the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.clients import MANIFEST_TYPES, ClientError, RegistryClient, registry_client
from bench.images import Image, Layout
from bench.report import format_table, human_bytes
from bench.servers import Hroot, Server
from registry.follow import MISS_EVERY

MiB = 1 << 20
FILL_LAYER = 256 * MiB  # the fill image's layers are at most this big
SMALL_LAYER = 16 << 10
POLL = 0.005  # seconds between two looks at a follower
DEADLINE = 300.0  # seconds a follower may take to show a push before the run fails
REPO = "app"

# Whether a follower shows a tag yet: by a manifest GET, or by tags/list.
Look = Callable[[RegistryClient, str], Awaitable[bool]]


class Follower(Hroot):
    """`hroot serve --follow SOURCE` on a data folder of its own."""

    def __init__(self, home: Path, name: str, source: str, interval: float) -> None:
        super().__init__(home)
        self.name = name
        self.source = source
        self.interval = interval

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--follow",
            self.source,
            "--follow-interval",
            f"{self.interval:g}",
        ]


@dataclass(frozen=True)
class FollowerResult:
    name: str
    initial_fetch: float  # seconds from start to serving the fill image
    pull: list[float]  # seconds from a push's 201 to the follower's 200
    periodic: list[float]  # seconds from a push's 201 to its tag listed
    push_bytes: int  # bytes its objects/ grew by for one small push


@dataclass(frozen=True)
class Result:
    interval: float
    fill_bytes: int
    pushes: int
    primary_push_bytes: int
    followers: list[FollowerResult]

    def table(self) -> str:
        header = [
            "follower",
            "initial fetch",
            "pull p50",
            "pull p99",
            "periodic p50",
            "periodic p99",
            "bytes fetched for one push",
        ]
        rows = [
            [
                f.name,
                f"{f.initial_fetch:.1f} s",
                *(f"{percentile(f.pull, q) * 1000:.0f} ms" for q in (50, 99)),
                *(f"{percentile(f.periodic, q) * 1000:.0f} ms" for q in (50, 99)),
                human_bytes(f.push_bytes),
            ]
            for f in self.followers
        ]
        return "\n".join(
            [
                f"replication: a primary holding {human_bytes(self.fill_bytes)}, two followers "
                f"(--follow-interval {self.interval:g} s); {self.pushes} pushes of one "
                f"{human_bytes(SMALL_LAYER)} layer each, timed from the push's 201",
                "",
                *format_table(header, rows, align="lrrrrrr"),
                "",
                f"one such push added {human_bytes(self.primary_push_bytes)} to the primary's "
                "objects/; 'bytes fetched' is what it added to each follower's objects/",
            ]
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value that was measured, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def files(folder: Path) -> dict[Path, int]:
    """Every file under `folder` and its size."""
    return {
        Path(root, name): os.stat(os.path.join(root, name)).st_size
        for root, _, names in os.walk(folder)
        for name in names
    }


def growth(before: dict[Path, int], after: dict[Path, int]) -> int:
    """Bytes of the files that are new or changed."""
    return sum(size for path, size in after.items() if before.get(path) != size)


async def manifest_found(client: RegistryClient, tag: str) -> bool:
    async with client.session.get(
        client.url(f"/v2/{REPO}/manifests/{tag}"), headers={"Accept": MANIFEST_TYPES}
    ) as response:
        await response.read()
        if response.status not in (200, 404):
            raise ClientError(f"GET manifest {tag}: {response.status}")
        return response.status == 200


async def tag_listed(client: RegistryClient, tag: str) -> bool:
    async with client.session.get(client.url(f"/v2/{REPO}/tags/list")) as response:
        body = await response.json()
        if response.status not in (200, 404):
            raise ClientError(f"GET tags/list: {response.status} {body}")
        return response.status == 200 and tag in (body["tags"] or [])


async def seconds_until(look: Look, client: RegistryClient, tag: str, since: float) -> float:
    """Seconds from `since` (time.perf_counter()) until `look` says yes."""
    deadline = time.monotonic() + DEADLINE
    while not await look(client, tag):
        if time.monotonic() > deadline:
            raise ClientError(f"{client.base}: {tag} not there after {DEADLINE:.0f} s")
        await asyncio.sleep(POLL)
    return time.perf_counter() - since


async def measure(work: Path, pushes: int, fill: int, interval: float) -> Result:
    layout = Layout(work / "layout")
    print(f"writing a {human_bytes(fill)} image and {2 * pushes + 1} small ones", flush=True)
    sizes = [min(FILL_LAYER, fill - offset) for offset in range(0, fill, FILL_LAYER)]
    big = layout.add_image("fill", [layout.add_random_layer(s, n) for n, s in enumerate(sizes)])
    small = [
        layout.add_image(f"s{n}", [layout.add_random_layer(SMALL_LAYER, 1000 + n)])
        for n in range(2 * pushes + 1)
    ]
    layout.save()

    primary = Hroot(work / "primary")
    servers: list[Server] = [primary]
    try:
        await primary.start()
        async with registry_client(primary.url) as to_primary:
            print("pushing it to the primary", flush=True)
            await to_primary.push_image(REPO, big)
            followers = [
                Follower(work / "http", "http", f"{primary.url}/git/", interval),
                Follower(work / "path", "path", str(primary.data), interval),
            ]
            servers += followers
            print("starting the followers: their first fetch", flush=True)
            initial = await asyncio.gather(*(first_fetch(f) for f in followers))
            async with aiohttp.ClientSession() as session:
                clients = [RegistryClient(session, f.url) for f in followers]
                pull = await timed(to_primary, clients, small[:pushes], manifest_found, MISS_EVERY)
                periodic = await timed(to_primary, clients, small[pushes:-1], tag_listed, 0)
                before = [files(s.data / "objects") for s in servers]
                await push_and_wait(to_primary, clients, small[-1], tag_listed)
                grown = [
                    growth(b, files(s.data / "objects"))
                    for b, s in zip(before, servers, strict=True)
                ]
    finally:
        for server in servers:
            await server.stop()
    return Result(
        interval,
        sum(blob.size for blob in big.blobs),
        pushes,
        grown[0],
        [
            FollowerResult(f.name, initial[n], pull[n], periodic[n], grown[n + 1])
            for n, f in enumerate(followers)
        ],
    )


async def first_fetch(follower: Follower) -> float:
    """Seconds from the follower's start until it serves the fill image."""
    started = time.perf_counter()
    await follower.start()
    async with registry_client(follower.url) as client:
        return await seconds_until(manifest_found, client, "fill", started)


async def push_and_wait(
    primary: RegistryClient, followers: list[RegistryClient], image: Image, look: Look
) -> list[float]:
    """Push `image`, then the seconds from its 201 until each follower shows it."""
    await primary.push_image(REPO, image)
    acknowledged = time.perf_counter()
    return list(
        await asyncio.gather(
            *(seconds_until(look, client, image.tag, acknowledged) for client in followers)
        )
    )


async def timed(
    primary: RegistryClient,
    followers: list[RegistryClient],
    images: list[Image],
    look: Look,
    spacing: float,
) -> list[list[float]]:
    """Each image pushed and waited for in turn, the next `spacing` seconds after every
    follower showed the last one; the delays per follower."""
    delays: list[list[float]] = [[] for _ in followers]
    for image in images:
        for n, seconds in enumerate(await push_and_wait(primary, followers, image, look)):
            delays[n].append(seconds)
        await asyncio.sleep(spacing)
    return delays


def run(work: Path, pushes: int, fill: int, interval: float) -> Result:
    return asyncio.run(measure(work, pushes, fill, interval))
