"""Storage micro benchmark: one big random blob through storage.Store, next to plain files.

Each phase runs in a fresh process, so its peak RSS growth (VmHWM at the end minus the
resident set once everything is imported) is the memory that phase alone needed. The
store's read is timed on the loose object, then again after `git gc` packed it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from bench.images import CHUNK
from bench.report import format_table, human_bytes
from bench.servers import vm_hwm
from storage import Store

MiB = 1 << 20
REPO = "bench/blob"
WRITE_RATIO_TARGET = 0.5  # store write speed / (plain write + sha256) speed
READ_TARGET = 500e6  # bytes per second
RSS_TARGET = 64 * MiB


@dataclass(frozen=True)
class Blob:
    work: Path
    digest: str
    size: int

    @property
    def source(self) -> Path:
        return self.work / "source"

    @property
    def plain(self) -> Path:
        return self.work / "plain"

    @property
    def store(self) -> Path:
        """The store the blob goes into with put_blob."""
        return self.work / "store"

    @property
    def uploaded(self) -> Path:
        """The store the blob goes into as an upload, as the registry writes it."""
        return self.work / "uploaded"


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rss_growth: int  # bytes
    size: int
    target: str | None  # "write" or "read": which targets the phase answers to

    @property
    def rate(self) -> float:
        return self.size / self.seconds


def make_source(work: Path, size: int) -> Blob:
    """Writes `size` seeded random bytes; returns them with their digest."""
    rng = random.Random(0)
    digest = hashlib.sha256()
    with (work / "source").open("wb") as out:
        for offset in range(0, size, CHUNK):
            chunk = rng.randbytes(min(CHUNK, size - offset))
            digest.update(chunk)
            out.write(chunk)
    return Blob(work, "sha256:" + digest.hexdigest(), size)


def _drain(read: Callable[[int], bytes], update: Callable[[bytes], object] | None) -> int:
    """Reads to the end, passing each chunk to `update` if given; returns the byte count."""
    total = 0
    while chunk := read(CHUNK):
        total += len(chunk)
        if update is not None:
            update(chunk)
    return total


def _expect(blob: Blob, digest: str, size: int) -> None:
    if (digest, size) != (blob.digest, blob.size):
        raise AssertionError(f"expected {blob.digest}, {blob.size} bytes; got {digest}, {size}")


def plain_write(blob: Blob) -> None:
    digest = hashlib.sha256()
    with blob.source.open("rb") as source, blob.plain.open("wb") as out:

        def hash_and_write(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        _drain(source.read, hash_and_write)
    _expect(blob, "sha256:" + digest.hexdigest(), blob.size)


def store_write(blob: Blob) -> None:
    store = Store.open(blob.store)
    try:
        with blob.source.open("rb") as source:
            info = store.put_blob(REPO, blob.digest, source, blob.size)
    finally:
        store.close()
    _expect(blob, info.digest, info.size)


def store_upload(blob: Blob) -> None:
    store = Store.open(blob.uploaded)
    try:
        upload_id = store.start_upload(REPO)
        with blob.source.open("rb") as source, store.open_upload(REPO, upload_id) as writer:
            _drain(source.read, writer.write)
        info = store.finish_upload(REPO, upload_id, blob.digest)
    finally:
        store.close()
    _expect(blob, info.digest, info.size)


def plain_read(blob: Blob) -> None:
    with blob.plain.open("rb") as source:
        _expect(blob, blob.digest, _drain(source.read, None))


def store_read(blob: Blob, where: Path, verify: bool = False) -> None:
    """Reads the blob back from the store at `where`; hashes it only with `verify`, as a
    server does not."""
    digest = hashlib.sha256()
    store = Store.open(where, create=False)
    try:
        with store.open_blob(REPO, blob.digest) as reader:
            size = _drain(reader.read, digest.update if verify else None)
    finally:
        store.close()
    _expect(blob, "sha256:" + digest.hexdigest() if verify else blob.digest, size)


def _measure(step: Callable[[Blob], None], blob: Blob) -> tuple[float, int]:
    """In a fresh process: (seconds, peak RSS growth in bytes) of one step."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = vm_hwm(os.getpid())
    start = time.perf_counter()
    step(blob)
    return time.perf_counter() - start, vm_hwm(os.getpid()) - base


def _in_fresh_process(
    name: str, step: Callable[[Blob], None], blob: Blob, target: str | None = None
) -> Phase:
    os.sync()  # so that no phase pays for writing back another phase's dirty pages
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, context, max_tasks_per_child=1) as pool:
        seconds, growth = pool.submit(_measure, step, blob).result()
    phase = Phase(name, seconds, growth, blob.size, target)
    print(
        f"  {name}: {seconds:.2f} s, {phase.rate / 1e6:.0f} MB/s, peak RSS +{human_bytes(growth)}",
        flush=True,
    )
    return phase


def _git_gc(blob: Blob) -> tuple[float, str]:
    """Runs `git gc` on the store's repository; returns its seconds and `count-objects -v`."""
    store = Store.open(blob.store, create=False)
    gitdir = str(store.path)
    store.close()
    start = time.perf_counter()
    subprocess.run(["git", "--git-dir", gitdir, "gc", "--quiet"], check=True)
    seconds = time.perf_counter() - start
    counts = subprocess.run(
        ["git", "--git-dir", gitdir, "count-objects", "-v"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return seconds, ", ".join(counts.split("\n")[:4])


@dataclass(frozen=True)
class BlobResult:
    size: int
    phases: list[Phase]
    gc_seconds: float
    gc_counts: str  # the first lines of `git count-objects -v` after gc

    def verdicts(self) -> dict[str, str]:
        """Each store phase against its targets, as text."""
        plain_write_rate = self.phases[0].rate
        out: dict[str, str] = {}
        for phase in self.phases:
            if phase.target == "write":
                ratio = phase.rate / plain_write_rate
                speed = f"{ratio:.2f} of plain (≥ {WRITE_RATIO_TARGET}) " + _ok(
                    ratio >= WRITE_RATIO_TARGET
                )
            elif phase.target == "read":
                speed = f"≥ {READ_TARGET / 1e6:.0f} MB/s " + _ok(phase.rate >= READ_TARGET)
            else:
                continue
            memory = f"RSS < {human_bytes(RSS_TARGET)} " + _ok(phase.rss_growth < RSS_TARGET)
            out[phase.name] = f"{speed}; {memory}"
        return out

    def table(self) -> str:
        verdicts = self.verdicts()
        header = ["phase", "seconds", "MB/s", "peak RSS growth", "targets"]
        rows = [
            [
                phase.name,
                f"{phase.seconds:.2f}",
                f"{phase.rate / 1e6:.0f}",
                human_bytes(phase.rss_growth),
                verdicts.get(phase.name, ""),
            ]
            for phase in self.phases
        ]
        return "\n".join(
            [
                f"storage.Store with one {human_bytes(self.size)} random blob; "
                f"git gc took {self.gc_seconds:.1f} s ({self.gc_counts})",
                "",
                *format_table(header, rows, align="lrrrl"),
            ]
        )

    def to_json(self) -> dict[str, object]:
        return {
            "size_bytes": self.size,
            "git_gc_seconds": self.gc_seconds,
            "git_count_objects": self.gc_counts,
            "phases": [asdict(phase) | {"bytes_per_second": phase.rate} for phase in self.phases],
            "verdicts": self.verdicts(),
        }


def _ok(met: bool) -> str:
    return "ok" if met else "MISSED"


def run(work: Path, size: int) -> BlobResult:
    print(f"writing {human_bytes(size)} of random bytes to {work}", flush=True)
    blob = make_source(work, size)
    phases = [
        _in_fresh_process("plain write + sha256", plain_write, blob),
        _in_fresh_process("store put_blob (known size)", store_write, blob, "write"),
        _in_fresh_process("store upload (1 MiB writes)", store_upload, blob, "write"),
        _in_fresh_process("plain read", plain_read, blob),
        _in_fresh_process(
            "store read (put_blob object)", partial(store_read, where=blob.store), blob, "read"
        ),
        _in_fresh_process(
            "store read (uploaded object)", partial(store_read, where=blob.uploaded), blob, "read"
        ),
    ]
    gc_seconds, counts = _git_gc(blob)
    print(f"  git gc of the put_blob store: {gc_seconds:.2f} s; {counts}", flush=True)
    phases.append(
        _in_fresh_process(
            "store read (packed by git gc)", partial(store_read, where=blob.store), blob, "read"
        )
    )
    for where in (blob.store, blob.uploaded):
        store_read(blob, where, verify=True)
    print("  both stores give back the very bytes (sha256 checked)", flush=True)
    return BlobResult(size, phases, gc_seconds, counts)
