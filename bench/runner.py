"""Runs workloads against both registries in alternation: hroot, Distribution, hroot, …

Both servers of a workload start on fresh data folders and stay up (workloads may
restart or reset them); a failure on one registry ends that registry's part of the
workload and is reported, the other carries on.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Mapping

from bench.report import Outcome, WorkloadResult
from bench.servers import REPO_ROOT, Server
from bench.workloads import Workload

STATUS_INTERVAL = 30.0


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _tell_status(server: Server, workload: Workload) -> None:
    while True:
        await asyncio.sleep(STATUS_INTERVAL)
        if workload.status:
            progress(f"  {server.name}: {workload.status}")


async def _attempt(
    server: Server,
    workload: Workload,
    outcome: Outcome,
    step: Awaitable[Mapping[str, float]],
    timeout: float,
) -> None:
    """Awaits one step, recording its metrics or, if it fails, the error."""
    teller = asyncio.create_task(_tell_status(server, workload))
    try:
        metrics = await asyncio.wait_for(step, timeout)
    except TimeoutError:
        outcome.error = f"no result within {timeout:.0f} s (--timeout)"
    except Exception as error:
        outcome.error = f"{type(error).__name__}: {error}"
    else:
        outcome.add(metrics)
        done = ", ".join(f"{name} {value:.3g}" for name, value in metrics.items())
        progress(f"  {server.name}: {done or 'ready'}")
    finally:
        teller.cancel()
    if outcome.error is not None:
        if workload.status:
            outcome.error += f" ({workload.status})"
        progress(f"  {server.name} failed: {outcome.error}")
    workload.status = ""


async def _start_and_prepare(server: Server, workload: Workload) -> Mapping[str, float]:
    await server.start()
    return await workload.prepare(server)


async def run_workload(workload: Workload, timeout: float) -> WorkloadResult:
    progress(f"workload {workload.number}: {workload.title}: building images")
    await asyncio.to_thread(workload.build)
    servers = workload.servers()
    outcomes = {server.name: Outcome() for server in servers}
    try:
        try:
            await workload.start()
        except Exception as error:
            progress(f"  workload {workload.number} could not start: {error}")
            for outcome in outcomes.values():
                outcome.error = f"workload start: {type(error).__name__}: {error}"
        for server in servers:
            outcome = outcomes[server.name]
            if outcome.error is None:
                step = _start_and_prepare(server, workload)
                await _attempt(server, workload, outcome, step, timeout)
        for number in range(workload.rounds):
            progress(f"workload {workload.number} round {number + 1}/{workload.rounds}")
            for server in servers:
                outcome = outcomes[server.name]
                if outcome.error is None:
                    # Nothing left to write back when a round starts: hroot syncs what it
                    # writes, Distribution does not, and the writeback of its (or an
                    # earlier workload's) dirty pages would otherwise slow hroot's fsyncs.
                    await asyncio.to_thread(os.sync)
                    await server.settle()  # nor any git gc hroot started still packing
                    step = workload.run_round(server, number)
                    await _attempt(server, workload, outcome, step, timeout)
    finally:
        for server in servers:
            await server.stop()
            outcomes[server.name].peak_rss = server.peak_rss
            outcomes[server.name].disk_bytes = server.disk_bytes()
        await workload.stop()
    shutil.rmtree(workload.home)
    return WorkloadResult(
        workload.number, workload.title, workload.rounds, workload.params(), outcomes
    )


async def run(workloads: list[Workload], timeout: float) -> list[WorkloadResult]:
    return [await run_workload(workload, timeout) for workload in workloads]


def _version(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "missing"
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    return (done.stdout or done.stderr).strip()


def environment() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hroot_commit": _version(["git", "describe", "--always", "--dirty"]),
        "distribution": _version(["docker-registry", "--version"]),
        "skopeo": _version(["skopeo", "--version"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": len(os.sched_getaffinity(0)),
    }
