"""Fixtures of the end-to-end tests: a real hroot server and real clients, all in temp dirs.

The server is `python -m registry serve` on a free loopback port with its git repository
in a temp dir; docker talks to a dockerd of its own (own data root, socket and network
settings that leave the host alone); podman keeps its storage in a temp dir too. Each
client fixture skips when the client is missing, or fails under HROOT_REQUIRE_E2E=1.
Every function-scoped use of the server ends with `git fsck` of its repository.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from .certs import Certs
from .oci import tagged
from .tools import free_port, missing, need_module, need_tool, output, run, running

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD_SEP = "\x1e"


@dataclass
class Cli:
    """A command-line client with its fixed leading arguments and environment."""

    argv: list[str | Path]
    env: dict[str, str] | None = None

    def __call__(
        self, *args: str | Path, input: bytes | None = None, cwd: Path | None = None
    ) -> str:
        """Run the client, which must succeed; return its standard output."""
        return output(*self.argv, *args, env=self.env, input=input, cwd=cwd)

    def attempt(self, *args: str | Path) -> tuple[int, str]:
        """Run the client when failing is a legitimate outcome: (exit code, stdout + stderr)."""
        proc = run(*self.argv, *args, env=self.env, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: list[str]
    digests: list[str]  # its Manifest-Digest trailers


@dataclass
class Hroot:
    """A running `python -m registry serve` and the bare git repository it writes."""

    host: str  # 127.0.0.1:PORT
    data: Path  # the bare git repository
    log: Path
    log_mark: int = field(default=0)
    process: subprocess.Popen[bytes] | None = None  # set by `serving`

    def ref(self, name: str, reference: str) -> str:
        """`host/name:tag` or `host/name@sha256:…`, as clients write image references."""
        sep = "@" if ":" in reference else ":"
        return f"{self.host}/{name}{sep}{reference}"

    def git(self, *args: str | Path) -> str:
        return output("git", "--git-dir", self.data, *args)

    def cli(self, *args: str | Path) -> str:
        """`python -m registry ARGS --data <this server's repository>`, which must succeed."""
        return output(sys.executable, "-m", "registry", *args, "--data", self.data, cwd=REPO_ROOT)

    def inspect_digest(self, skopeo: Cli, name: str, tag: str) -> str:
        """The digest skopeo reads for `name:tag` from this server."""
        raw = skopeo("inspect", "--tls-verify=false", f"docker://{self.ref(name, tag)}")
        return str(json.loads(raw)["Digest"])

    @staticmethod
    def branch(name: str) -> str:
        """The branch of repository `name`, as DESIGN.md §2.1 spells it."""
        branch = "hroot/" + name.replace("/", "+")
        return branch + "+" if branch.endswith(".lock") else branch

    def commits(self, name: str) -> list[Commit]:
        """The branch's own history (`git log --first-parent`), newest first."""
        fmt = "%H%x00%P%x00%(trailers:key=Manifest-Digest,valueonly,separator=%x20)%x1e"
        log = self.git("log", "--first-parent", f"--format={fmt}", self.branch(name), "--")
        commits = []
        for record in filter(None, (r.strip("\n") for r in log.split(RECORD_SEP))):
            sha, parents, digests = record.split("\x00")
            commits.append(Commit(sha, parents.split(), digests.split()))
        return commits

    def assert_pushed(self, name: str, *digests: str) -> list[Commit]:
        """Each digest was pushed to `name`: some commit of its branch has it as Manifest-Digest."""
        commits = self.commits(name)
        recorded = {d for c in commits for d in c.digests}
        for digest in digests:
            assert digest in recorded, (
                f"no commit on {self.branch(name)} has Manifest-Digest: {digest}\n"
                + self.git("log", "--format=%H %s%n%b", self.branch(name), "--")
            )
        return commits

    def fsck(self) -> None:
        """`git fsck --full --strict`: no error, no warning (notices about HEAD are fine)."""
        proc = run("git", "--git-dir", self.data, "fsck", "--full", "--strict", "--no-dangling")
        complaints = [
            line
            for line in (proc.stdout + proc.stderr).decode().splitlines()
            if line.strip() and not line.startswith("notice:")
        ]
        assert not complaints, "git fsck:\n" + "\n".join(complaints)

    def export(self, name: str, dest: Path) -> Path:
        """`git archive hroot/<name> | tar -x -C dest`: the branch tip as an OCI layout."""
        archive = run("git", "--git-dir", self.data, "archive", "--format=tar", self.branch(name))
        dest.mkdir(parents=True, exist_ok=True)
        run("tar", "-x", "-C", dest, input=archive.stdout)
        return dest

    def new_log(self) -> str:
        """What the server logged since the current test began."""
        with self.log.open("rb") as f:
            f.seek(self.log_mark)
            return f.read().decode(errors="replace")[-20000:]


def _answers(url: str, ca: Path | None = None) -> bool:
    context = None if ca is None else ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as e:  # up, and asking for credentials
        return e.code == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def serving(
    data: Path, log: Path, *flags: str, ip: str = "127.0.0.1", certs: Certs | None = None
) -> Iterator[Hroot]:
    """`python -m registry serve` of the repository `data` on a free port of `ip`, with
    more `flags` if given; over HTTPS with `certs` (tests.e2e.certs)."""
    need_tool("git")
    host = f"{ip}:{free_port()}"
    url = f"{'http' if certs is None else 'https'}://{host}/v2/"
    if certs is not None:
        flags += ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    server = Hroot(host=host, data=data, log=log)
    cmd: list[str | Path] = [
        sys.executable,
        "-m",
        "registry",
        "serve",
        "--listen",
        host,
        "--data",
        server.data,
        *flags,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with running(
        cmd,
        log=server.log,
        ready=lambda: _answers(url, None if certs is None else certs.ca),
        what="hroot server",
        env=env,
        cwd=REPO_ROOT,
    ) as process:
        server.process = process
        yield server


@pytest.fixture(scope="session")
def hroot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hroot]:
    root = tmp_path_factory.mktemp("hroot")
    with serving(root / "hroot.git", root / "server.log") as server:
        yield server


def for_one_test(server: Hroot) -> Iterator[Hroot]:
    """`server` for one test: a failure shows what it logged meanwhile, and its repository
    must pass `git fsck` afterwards."""
    server.log_mark = server.log.stat().st_size
    yield server
    server.fsck()


@pytest.fixture
def hroot(hroot_server: Hroot) -> Iterator[Hroot]:
    """The session's server, for one test."""
    yield from for_one_test(hroot_server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed e2e test shows what the server logged while it ran."""
    report = yield
    server = getattr(item, "funcargs", {}).get("hroot")
    if report.failed and isinstance(server, Hroot):
        report.sections.append(("hroot server log", server.new_log()))
    return report


# --- clients ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox() -> Path:
    """A statically linked busybox: the whole userland of the test images."""
    path = Path(need_tool("busybox")).resolve()
    if b"ld-linux" in path.read_bytes()[:4096]:
        missing("busybox-static", f"{path} is dynamically linked; test images have no libc")
    return path


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """`docker` talking to a dockerd of the session's own (CLIENTS.md), stopped by its PID."""
    dockerd = need_tool("dockerd")
    cli = Cli([need_tool("docker")])
    root = tmp_path_factory.mktemp("dockerd")
    socket = root / "dockerd.sock"
    cli.env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{socket}",
        "DOCKER_CONFIG": str(root / "config"),  # `docker manifest` keeps its lists there
        "DOCKER_BUILDKIT": "0",  # the legacy builder: no buildx, no network
        "DOCKER_CLI_HINTS": "false",
    }
    cmd: list[str | Path] = [
        dockerd,
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--bridge=none",
        "--storage-driver=vfs",
        "--data-root",
        root / "data",
        "--exec-root",
        root / "exec",
        "--pidfile",
        root / "dockerd.pid",
        "--host",
        f"unix://{socket}",
    ]
    with running(
        cmd,
        log=root / "dockerd.log",
        what="dockerd",
        timeout=60,
        ready=lambda: socket.exists() and cli.attempt("version")[0] == 0,
    ):
        yield cli


@pytest.fixture(scope="session")
def skopeo() -> Cli:
    return Cli([need_tool("skopeo")])


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """podman with its storage in a temp dir (CLIENTS.md); use `--network none` to run."""
    root = tmp_path_factory.mktemp("podman")
    return Cli(
        [
            need_tool("podman"),
            "--root",
            root / "root",
            "--runroot",
            root / "run",
            "--tmpdir",  # libpod's state, /run/libpod by default: shared with other runs
            root / "tmp",
            "--storage-driver",
            "vfs",
        ]
    )


@dataclass
class ImageMaker:
    """Builds images into OCI layouts with umoci: no daemon, no network."""

    umoci: Cli
    busybox: Path

    def __call__(
        self,
        layout: Path,
        tag: str,
        files: dict[str, bytes],
        arch: str = "amd64",
        with_busybox: bool = True,
    ) -> str:
        """Tag in `layout` an image of busybox plus `files` (one layer each); its digest."""
        if not (layout / "index.json").exists():
            self.umoci("init", "--layout", layout)
        image = f"{layout}:{tag}"
        self.umoci("new", "--image", image)
        if with_busybox:
            self.umoci("insert", "--image", image, self.busybox, "/bin/busybox")
        staging = layout.with_name(f"{layout.name}.{tag}.files")
        staging.mkdir()
        for n, (dest, data) in enumerate(files.items()):
            source = staging / str(n)
            source.write_bytes(data)
            self.umoci("insert", "--image", image, source, dest)
        self.umoci(
            "config",
            "--image",
            image,
            "--architecture",
            arch,
            "--os",
            "linux",
            "--config.cmd",
            "/bin/busybox",
            "--config.cmd",
            "true",
        )
        self.umoci("gc", "--layout", layout)
        return str(tagged(layout, tag)["digest"])


@pytest.fixture(scope="session")
def make_image(busybox: Path) -> ImageMaker:
    return ImageMaker(Cli([need_tool("umoci")]), busybox)


@pytest.fixture(scope="session")
def oras() -> ModuleType:
    need_module("oras.client", "oras")
    import oras.client

    return oras.client


@pytest.fixture(scope="session")
def dxf() -> ModuleType:
    return need_module("dxf", "python-dxf")


# --- images pushed by docker, shared by the tests that read them back -----------------------


@dataclass(frozen=True)
class Pushed:
    ref: str
    digest: str
    token: str  # the content of /etc/hello in the image, unique to this image


def push(docker: Cli, ref: str) -> str:
    """`docker push` and the manifest digest it reports."""
    out = docker("push", ref)
    found = re.search(r"digest: (sha256:[0-9a-f]{64}) size:", out)
    assert found, f"no digest in the output of docker push:\n{out}"
    return found.group(1)


def import_image(docker: Cli, busybox: Path, workdir: Path, ref: str) -> Pushed:
    """`tar -C rootfs -c . | docker import - ref` of busybox plus /etc/hello, then push it."""
    token = secrets.token_hex(8)
    rootfs = workdir / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "etc" / "hello").write_text(token)
    docker("import", "-", ref, input=run("tar", "-C", rootfs, "-c", ".").stdout)
    return Pushed(ref, push(docker, ref), token)


def cat(docker: Cli, ref: str, *paths: str) -> str:
    return docker("run", "--rm", "--network", "none", ref, "/bin/busybox", "cat", *paths)


def docker_save(docker: Cli, base: Pushed, folder: Path, tag: str, files: dict[str, bytes]) -> Path:
    """An image built FROM `base` with `files` copied into /etc/, tagged `tag`, written by
    `docker save` into `folder`; the archive."""
    context = folder / "context"
    context.mkdir()
    for name, data in files.items():
        (context / name).write_bytes(data)
    (context / "Dockerfile").write_text(f"FROM {base.ref}\nCOPY {' '.join(files)} /etc/\n")
    docker("build", "--pull", "-t", tag, context)
    archive = folder / "saved.tar"
    docker("save", "-o", archive, tag)
    return archive


@pytest.fixture(scope="session")
def base(
    docker: Cli, hroot_server: Hroot, busybox: Path, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    """A one-layer image in hroot: the base of the built image and of the list."""
    return import_image(
        docker, busybox, tmp_path_factory.mktemp("base"), hroot_server.ref("base", "1")
    )


@pytest.fixture(scope="session")
def built(
    docker: Cli, hroot_server: Hroot, base: Pushed, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    """A three-layer image, `docker build` (legacy builder) FROM the base image in hroot."""
    context = tmp_path_factory.mktemp("context")
    token = secrets.token_hex(8)
    (context / "added").write_text(token)
    (context / "Dockerfile").write_text(
        f"FROM {base.ref}\nRUN echo built > /etc/built\nCOPY added /etc/added\n"
    )
    ref = hroot_server.ref("built", "1")
    docker("build", "--pull", "-t", ref, context)
    return Pushed(ref, push(docker, ref), token)


def assert_serves(server: Hroot, base: Pushed, built: Pushed, docker: Cli, skopeo: Cli) -> None:
    """`server` (a copy of the session's registry) gives skopeo the digests docker pushed,
    and docker pulls and runs the built image from it."""
    for name, image in (("base", base), ("built", built)):
        assert server.inspect_digest(skopeo, name, "1") == image.digest
    pulled = server.ref("built", "1")
    docker("pull", pulled)
    assert cat(docker, pulled, "/etc/added") == built.token
    docker("rmi", pulled)
