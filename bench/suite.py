"""Every workload of `python -m bench`, numbered as the README lists them."""

from __future__ import annotations

from pathlib import Path

from bench.series import DebianSeries
from bench.workloads import (
    ConcurrentPulls,
    ConcurrentPushes,
    DiskCorpus,
    GiB,
    ManifestLatency,
    ManyTagsAndRepositories,
    MiB,
    PullThrough,
    PushAtScale,
    Retention,
    SkopeoPushPull,
    Workload,
    scaled,
)


def workloads(root: Path, scale: float) -> list[Workload]:
    """All workloads at the given scale, each with its own folder under root."""
    series = scaled(10, scale, minimum=3)
    return [
        SkopeoPushPull(root / "1", 1, 1, scaled(GiB, scale)),
        SkopeoPushPull(root / "2", 2, 50, scaled(MiB, scale)),
        ConcurrentPulls(root / "3", 32, scaled(100 * MiB, scale)),
        ConcurrentPushes(root / "4", 8, scaled(MiB, scale)),
        ManifestLatency(root / "5", 200, scaled(4000, scale, minimum=400)),
        ManyTagsAndRepositories(
            root / "6", scaled(10_000, scale, minimum=10), scaled(2_000, scale, minimum=10)
        ),
        DiskCorpus(root / "7", 20, 5, scaled(8 * MiB, scale)),
        PushAtScale(
            root / "8", 10, scaled(2_000, scale, minimum=20), scaled(200, scale, minimum=50)
        ),
        Retention(root / "9", 20, 5, scaled(8 * MiB, scale)),
        PullThrough(root / "10", 4, scaled(50 * MiB, scale)),
        DebianSeries(root / "11", 11, series, compressed=True),
        DebianSeries(root / "12", 12, series, compressed=False),
        DebianSeries(root / "13", 13, series, compressed=True, hroot_args=("--fs-view", "*")),
    ]
