"""The `hroot` command: its help, and `python -m registry serve` as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from registry.cli import main
from tests.api.test_base import CLIENT_HELLO


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--listen", "--data", "--config", "--log-level", "HROOT_LISTEN"):
        assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "hroot 0.1.0"


def test_a_bad_flag_prints_the_usage_of_its_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hroot serve "), err
    assert "unrecognized arguments: --port 1" in err


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_bad_listen_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--listen", "nowhere"])
    assert exit_.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status


def test_serve_answers_shrugs_off_tls_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Creates ./hroot.git in its folder, serves, survives a ClientHello, exits 0 on SIGTERM."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    server = subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _get(f"http://127.0.0.1:{port}/v2/") == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(CLIENT_HELLO)
            assert s.recv(100).split(b" ")[1] == b"400"
        assert _get(f"http://127.0.0.1:{port}/v2/") == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0
    finally:
        server.kill()
        log = server.stderr.read() if server.stderr else ""
    assert (tmp_path / "hroot.git" / "objects").is_dir()
    assert '"GET /v2/" 200' in log
    assert "Traceback" not in log and " ERROR " not in log, log


def _serve(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`hroot serve` that is expected to refuse to start: it must exit by itself."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "registry", "serve", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_port_in_use_leaves_no_repository_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--listen", f"127.0.0.1:{port}", "--data", "new.git", cwd=tmp_path)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_setting_leaves_no_repository_behind(tmp_path: Path) -> None:
    (tmp_path / "hroot.toml").write_text('log_level = "loud"\n')
    done = _serve("--config", "hroot.toml", "--data", "new.git", cwd=tmp_path)
    assert done.returncode == 2 and "log_level" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["hroot.toml"]


def test_a_folder_that_is_not_a_registry_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("buy milk\n")
    done = _serve("--listen", f"127.0.0.1:{_free_port()}", "--data", folder, cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"{folder}: is a folder that is not empty and not a git repository" in line
    assert "Traceback" not in done.stderr
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]


def test_unusable_auth_files_leave_no_repository_behind(tmp_path: Path) -> None:
    done = _serve("--htpasswd", "absent.htpasswd", "--data", "new.git", cwd=tmp_path)
    assert done.returncode == 2
    assert "authentication: [Errno 2] No such file or directory: 'absent.htpasswd'" in done.stderr
    (tmp_path / "hroot.toml").write_text(
        'trusted_issuer = "auth"\ntrusted_issuer_key = "hroot.toml"\ntoken_realm = "https://a/t"\n'
    )
    done = _serve("--config", "hroot.toml", "--data", "new.git", cwd=tmp_path)
    assert done.returncode == 2 and "authentication:" in done.stderr, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["hroot.toml"]
