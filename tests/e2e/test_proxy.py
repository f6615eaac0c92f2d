"""hroot as a pull-through proxy of real registries (issue 14's "Done means").

CNCF Distribution on loopback is the upstream (tests.proxy_servers), `hroot serve --config`
with an `[[upstream]]` stands in front of it, and docker and skopeo pull through hroot. What
reached the upstream is read from Distribution's access log; what hroot kept, from `git log`.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest

from tests import proxy_servers
from tests.proxy_servers import Registry

from .conftest import Cli, Hroot, ImageMaker, cat, for_one_test, serving
from .oci import check_layout, read_blob, tagged
from .tools import run

pytestmark = pytest.mark.e2e

TTL = 2.0  # seconds a tag is served before hroot asks upstream again
PREFIX = "up"
SAME = "--preserve-digests"  # skopeo must not swap a layer for a compression it saw elsewhere
TO_UPSTREAM = "--dest-tls-verify=false"
FROM_HROOT = "--src-tls-verify=false"
BIG = 100 << 20
SETTLE = 60.0  # seconds hroot may take to commit (or give up on) what it fetched


def upstream_table(
    url: str, prefix: str = PREFIX, credentials: tuple[str, str] | None = None
) -> str:
    """An `[[upstream]]` table of hroot's config."""
    table = f'[[upstream]]\nurl = "{url}"\nprefix = "{prefix}"\nttl = {TTL}\n'
    if credentials is not None:
        table += f'username = "{credentials[0]}"\npassword = "{credentials[1]}"\n'
    return table


@contextmanager
def proxying(root: Path, *tables: str) -> Iterator[Hroot]:
    """`hroot serve --config` with these upstream tables, for one test."""
    root.mkdir()
    config = root / "hroot.toml"
    config.write_text("\n".join(tables))
    with serving(root / "hroot.git", root / "server.log", "--config", str(config)) as server:
        yield server


def upload(skopeo: Cli, layout: Path, tag: str, upstream: Registry, ref: str) -> None:
    """skopeo copy of the layout's `tag` to `upstream` as `ref` (NAME:TAG)."""
    creds = ["--dest-creds", ":".join(upstream.credentials)] if upstream.credentials else []
    skopeo("copy", SAME, TO_UPSTREAM, *creds, f"oci:{layout}:{tag}", at(upstream, ref))


def at(upstream: Registry, ref: str) -> str:
    """skopeo's name of `ref` (NAME:TAG) at `upstream`."""
    return f"docker://{upstream.url.removeprefix('http://')}/{ref}"


def hello_image(
    make_image: ImageMaker, skopeo: Cli, upstream: Registry, tmp_path: Path, ref: str
) -> tuple[str, str]:
    """An image of busybox and an /etc/hello of its own, at `upstream` as `ref` (NAME:TAG):
    (the text of /etc/hello, the image's digest)."""
    hello = secrets.token_hex(16)
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", {"/etc/hello": hello.encode()})
    upload(skopeo, layout, "v1", upstream, ref)
    return hello, digest


def docker_runs(docker: Cli, ref: str, hello: str) -> None:
    """docker pulls `ref` and runs it: its /etc/hello says `hello`."""
    try:
        docker("pull", ref)
        assert cat(docker, ref, "/etc/hello") == hello
    finally:
        docker.attempt("rmi", "-f", ref)


def pull(skopeo: Cli, hroot: Hroot, name: str, tag: str, dest: Path) -> str:
    """skopeo copy of `name:tag` from hroot into a fresh OCI layout, checked blob by blob;
    the digest it got."""
    skopeo("copy", SAME, FROM_HROOT, f"docker://{hroot.ref(name, tag)}", f"oci:{dest}:{tag}")
    return check_layout(dest, tag)


def history(hroot: Hroot, name: str, commits: int) -> str:
    """`git log` of the branch of `name` once it has `commits` commits (hroot commits what it
    fetched in the background, after the client has its image)."""
    deadline = time.monotonic() + SETTLE
    while True:
        log = run(
            "git",
            "--git-dir",
            hroot.data,
            "log",
            "--format=%B%x00",
            hroot.branch(name),
            check=False,
        ).stdout.decode()
        if log.count("\x00") >= commits:
            return log
        assert time.monotonic() < deadline, f"{name} never got {commits} commits:\n{log}"
        time.sleep(0.1)


def blob_gets(upstream: Registry, name: str, digest: str) -> int:
    """GETs of the blob's body in Distribution's access log (which goes to its log)."""
    return upstream.log.read_text(errors="replace").count(f'"GET /v2/{name}/blobs/{digest} ')


def largest_layer(layout: Path, tag: str) -> dict[str, object]:
    manifest = json.loads(read_blob(layout, tagged(layout, tag)))
    return dict(max(manifest["layers"], key=lambda layer: layer["size"]))


@pytest.fixture
def upstream_stack() -> Iterator[ExitStack]:
    """Where a test starts its upstream, to stop it before hroot if it wants."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def upstream(upstream_stack: ExitStack, tmp_path: Path) -> Registry:
    """An open Distribution; `upstream_stack.close()` stops it."""
    return upstream_stack.enter_context(proxy_servers.distribution(tmp_path / "distribution"))


@pytest.fixture
def hroot(upstream: Registry, tmp_path: Path) -> Iterator[Hroot]:
    """hroot in front of `upstream`, its names under `up/` (a failed test shows its log)."""
    with proxying(tmp_path / "hroot", upstream_table(upstream.url)) as server:
        yield from for_one_test(server)


def test_docker_and_skopeo_pull_through_into_git_history(
    docker: Cli,
    skopeo: Cli,
    upstream: Registry,
    hroot: Hroot,
    make_image: ImageMaker,
    tmp_path: Path,
) -> None:
    hello, digest = hello_image(make_image, skopeo, upstream, tmp_path, "lib/app:v1")
    inspected = skopeo("inspect", "--tls-verify=false", at(upstream, "lib/app:v1"))
    assert json.loads(inspected)["Digest"] == digest
    docker_runs(docker, hroot.ref(f"{PREFIX}/lib/app", "v1"), hello)
    assert pull(skopeo, hroot, f"{PREFIX}/lib/app", "v1", tmp_path / "pulled") == digest
    log = history(hroot, f"{PREFIX}/lib/app", 1)
    assert f"Proxied-From: {upstream.url}/lib/app:v1" in log
    assert f"Upstream-Digest: {digest}" in log
    hroot.assert_pushed(f"{PREFIX}/lib/app", digest)


def test_pulls_go_on_with_the_upstream_stopped(
    docker: Cli,
    skopeo: Cli,
    upstream: Registry,
    upstream_stack: ExitStack,
    hroot: Hroot,
    make_image: ImageMaker,
    tmp_path: Path,
) -> None:
    hello, digest = hello_image(make_image, skopeo, upstream, tmp_path, "lib/kept:v1")
    name = f"{PREFIX}/lib/kept"
    assert pull(skopeo, hroot, name, "v1", tmp_path / "first") == digest
    history(hroot, name, 1)
    upstream_stack.close()  # Distribution stopped
    time.sleep(TTL)  # past the TTL: hroot asks upstream, finds nobody, serves what it has
    docker_runs(docker, hroot.ref(name, "v1"), hello)
    assert pull(skopeo, hroot, name, "v1", tmp_path / "again") == digest
    assert f"serving {name}:v1 as stored" in hroot.new_log()
    assert len(hroot.commits(name)) == 1


def test_a_tag_moved_upstream_is_a_new_commit_after_its_ttl(
    skopeo: Cli, upstream: Registry, hroot: Hroot, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    first = make_image(layout, "one", {"/etc/version": b"1"})
    second = make_image(layout, "two", {"/etc/version": b"2"})
    name = f"{PREFIX}/lib/moving"
    upload(skopeo, layout, "one", upstream, "lib/moving:latest")
    assert pull(skopeo, hroot, name, "latest", tmp_path / "first") == first
    history(hroot, name, 1)
    upload(skopeo, layout, "two", upstream, "lib/moving:latest")
    time.sleep(TTL)
    assert pull(skopeo, hroot, name, "latest", tmp_path / "second") == second
    log = history(hroot, name, 2)
    assert log.index(f"Upstream-Digest: {second}") < log.index(f"Upstream-Digest: {first}")
    assert log.count(f"Proxied-From: {upstream.url}/lib/moving:latest") == 2


def test_concurrent_pulls_fetch_a_missing_layer_from_upstream_once(
    skopeo: Cli,
    upstream: Registry,
    hroot: Hroot,
    make_image: ImageMaker,
    tmp_path: Path,
) -> None:
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", {"/big": secrets.token_bytes(BIG)}, with_busybox=False)
    upload(skopeo, layout, "v1", upstream, "lib/big:v1")
    layer = str(largest_layer(layout, "v1")["digest"])
    name = f"{PREFIX}/lib/big"
    with ThreadPoolExecutor(2) as pool:
        pulled = pool.map(lambda n: pull(skopeo, hroot, name, "v1", tmp_path / str(n)), (1, 2))
        assert list(pulled) == [digest] * 2
    history(hroot, name, 1)  # what the commit fetched in the background is in the count too
    assert blob_gets(upstream, "lib/big", layer) == 1
    assert hroot.new_log().count(f"GET /v2/{name}/blobs/{layer}") == 2


def test_a_corrupted_upstream_blob_is_refused_and_nothing_stored(
    skopeo: Cli, upstream: Registry, hroot: Hroot, tmp_path: Path
) -> None:
    image = proxy_servers.make_image(4 << 20)
    proxy_servers.push(upstream, "lib/bad", image, "v1")
    # Other bytes of the same size where Distribution keeps the layer: it does not check
    # what it reads, so it serves them under the layer's digest.
    hexdigest = proxy_servers.sha256(image.layer).removeprefix("sha256:")
    data = tmp_path / "distribution/data/docker/registry/v2/blobs/sha256" / hexdigest[:2]
    (data / hexdigest / "data").write_bytes(secrets.token_bytes(len(image.layer)))
    name = f"{PREFIX}/lib/bad"
    source = f"docker://{hroot.ref(name, 'v1')}"
    code, out = skopeo.attempt("copy", SAME, FROM_HROOT, source, f"oci:{tmp_path / 'bad'}:v1")
    assert code != 0, out
    deadline = time.monotonic() + SETTLE
    while "could not store" not in hroot.new_log():  # the background commit gives up too
        assert time.monotonic() < deadline, hroot.new_log()
        time.sleep(0.1)
    assert f"sent a blob that does not match its digest sha256:{hexdigest}" in hroot.new_log()
    assert hroot.git("for-each-ref", f"refs/heads/{hroot.branch(name)}") == ""
    uploads = hroot.data / "hroot" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize(
    ("start", "granted"),
    [
        (proxy_servers.distribution, '"HEAD /v2/lib/secret/manifests/v1 HTTP/1.1" 200'),
        (
            proxy_servers.hroot,
            '"GET /auth/token?scope=repository:lib/secret:pull&service=hroot" 200',
        ),
    ],
    ids=["distribution-basic", "hroot-token"],
)
def test_upstream_credentials(
    start: Callable[[Path, tuple[str, str]], AbstractContextManager[Registry]],
    granted: str,
    skopeo: Cli,
    tmp_path: Path,
) -> None:
    """An upstream behind credentials: Distribution's htpasswd (Basic), hroot's --htpasswd
    (Docker's token flow; `granted` is the upstream's log line of it). Right ones pull
    through; wrong or none give the client a 502 naming the upstream."""
    credentials = ("puller", secrets.token_hex(8))
    wrong = ("puller", secrets.token_hex(8))
    with start(tmp_path / "upstream", credentials) as upstream:
        image = proxy_servers.make_image()
        proxy_servers.push(upstream, "lib/secret", image, "v1")
        tables = (
            upstream_table(upstream.url, "right", credentials),
            upstream_table(upstream.url, "wrong", wrong),
            upstream_table(upstream.url, "none"),
        )
        with proxying(tmp_path / "hroot", *tables) as hroot:
            assert pull(skopeo, hroot, "right/lib/secret", "v1", tmp_path / "ok") == image.digest
            history(hroot, "right/lib/secret", 1)
            assert granted in upstream.log.read_text()
            for prefix, says in (("wrong", "refused hroot's credentials"), ("none", "needs")):
                source = f"docker://{hroot.ref(f'{prefix}/lib/secret', 'v1')}"
                code, out = skopeo.attempt(
                    "copy", FROM_HROOT, source, f"oci:{tmp_path / prefix}:v1"
                )
                assert code != 0 and "502 Bad Gateway" in out, out  # skopeo shows no body
                url = f"http://{hroot.host}/v2/{prefix}/lib/secret/manifests/v1"
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(url, timeout=30)
                assert refused.value.code == 502
                error = json.load(refused.value)["errors"][0]
                assert error["code"] == "UNKNOWN"
                assert error["message"].startswith(f"upstream {upstream.url} {says}")
            log = hroot.log.read_text()
            assert credentials[1] not in log and wrong[1] not in log
