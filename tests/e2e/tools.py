"""Process helpers for the end-to-end tests: find a client, run a command, run a daemon.

Every command of the e2e suite goes through `run` (fails the test with the command's
output when it exits non-zero), and every long-lived process through `running`
(starts it, waits until it answers, and stops it by its PID on the way out, whatever
happened in between).
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

#: With HROOT_REQUIRE_E2E=1 (CI) a missing client fails the run instead of skipping.
REQUIRE_E2E = os.environ.get("HROOT_REQUIRE_E2E") == "1"

#: Where each command-line client comes from on Debian 12.
APT_PACKAGE = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "skopeo": "skopeo",
    "podman": "podman",
    "umoci": "umoci",
    "busybox": "busybox-static",
    "git": "git",
    "tar": "tar",
}


def missing(client: str, why: str) -> NoReturn:
    """Skip the test because `client` is not there, or fail it under HROOT_REQUIRE_E2E=1."""
    message = f"{client} not installed: {why}"
    if REQUIRE_E2E:
        pytest.fail(f"{message} (and HROOT_REQUIRE_E2E=1)", pytrace=False)
    pytest.skip(message)


def need_tool(name: str) -> str:
    """The full path of command `name`, or skip/fail the test when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        missing(name, f"`{name}` is not on PATH (apt-get install {APT_PACKAGE.get(name, name)})")
    return path


def need_module(name: str, pip_name: str) -> ModuleType:
    """Import a Python client, or skip/fail the test when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(pip_name, f"{error} (python -m pip install {pip_name})")


def _show(data: bytes, limit: int = 6000) -> str:
    text = data.decode(errors="replace")
    return text if len(text) <= limit else f"...{text[-limit:]}"


def run(
    *cmd: str | Path,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to its end; with check, fail the test (showing its output) on non-zero."""
    args = [str(part) for part in cmd]
    proc = subprocess.run(
        args,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"$ {shlex.join(args)}\nexited with {proc.returncode}\n"
            f"--- stdout\n{_show(proc.stdout)}\n--- stderr\n{_show(proc.stderr)}",
            pytrace=False,
        )
    return proc


def output(
    *cmd: str | Path,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> str:
    """`run` a command that must succeed and return its standard output as text."""
    return run(*cmd, env=env, input=input, cwd=cwd, timeout=timeout).stdout.decode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log: Path, limit: int = 6000) -> str:
    return _show(log.read_bytes(), limit) if log.exists() else "(no log)"


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """Stop a process we started: SIGTERM to its PID, then SIGKILL to its own process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # start_new_session=True made the process the leader of a group of its own: whatever it
    # left behind (dockerd's containerd, say) is in that group and nowhere else.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def running(
    cmd: list[str | Path],
    *,
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-lived process, wait until `ready()` is true, and always stop it afterwards."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(part) for part in cmd],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"{what} exited with {proc.returncode} before it was ready:\n{log_tail(log)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not ready after {timeout}s:\n{log_tail(log)}", pytrace=False)
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)
