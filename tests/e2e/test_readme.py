"""The README's walk-through, run command by command, so that it cannot drift from hroot.

Every `$ ` line of the walk-through's console blocks is run with bash in a fresh folder,
in order, and must succeed. Ports are the test's own: `:5000` and `:5001` in a command
become two free loopback ports, and a `hroot serve … &` line is started in the
background (listening on the first port unless it says otherwise) and stopped at the end.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, Cli, _answers
from .tools import free_port, run, running

pytestmark = pytest.mark.e2e


def walkthrough_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    return [
        line[2:]
        for block in re.findall(r"```console\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("$ ")
    ]


def test_the_walkthrough_has_commands() -> None:
    commands = walkthrough_commands()
    assert any(c.startswith("hroot serve") for c in commands)
    assert any(c.startswith("docker push") for c in commands)


@pytest.fixture
def ports() -> dict[str, str]:
    return {"5000": str(free_port()), "5001": str(free_port())}


def localize(command: str, ports: dict[str, str]) -> str:
    """The command with the README's ports replaced by the test's."""
    return re.sub(
        r"(localhost|127\.0\.0\.1):(5000|5001)\b", lambda m: f"127.0.0.1:{ports[m[2]]}", command
    )


@pytest.fixture
def background() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_readme_walkthrough(
    docker: Cli, busybox: Path, tmp_path: Path, ports: dict[str, str], background: ExitStack
) -> None:
    assert docker.env is not None
    env = {
        **docker.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HROOT_LISTEN": f"127.0.0.1:{ports['5000']}",
    }
    for n, readme_command in enumerate(walkthrough_commands()):
        command = localize(readme_command, ports)
        if command.endswith("&"):
            listen = re.search(r"127\.0\.0\.1:(\d+)", command)
            url = f"http://127.0.0.1:{listen[1] if listen else ports['5000']}/v2/"
            background.enter_context(
                running(
                    ["bash", "-c", f"exec {command.rstrip('&')}"],
                    log=tmp_path / f"background-{n}.log",
                    ready=lambda url=url: _answers(url),  # type: ignore[misc]
                    what=readme_command,
                    env=env,
                    cwd=tmp_path,
                )
            )
            continue
        run("bash", "-e", "-o", "pipefail", "-c", command, env=env, cwd=tmp_path, timeout=300)
