"""Filesystem views (docs/format.md §9) of images docker and skopeo push to a
`hroot serve --fs-view '*'`: three versions of an image whose `git diff` between tags
names exactly the files changed, a whiteout and a chmod/chown among them."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cli, Hroot, for_one_test, push, serving
from .tools import run

pytestmark = pytest.mark.e2e

VERSIONS = ("v1", "v2", "v3")


@pytest.fixture(scope="module")
def fs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hroot]:
    root = tmp_path_factory.mktemp("fsview")
    with serving(root / "hroot.git", root / "server.log", "--fs-view", "*") as server:
        yield server


@pytest.fixture
def hroot(fs_server: Hroot) -> Iterator[Hroot]:
    yield from for_one_test(fs_server)


def wait_for_view(server: Hroot, name: str, tags: tuple[str, ...], timeout: float = 30) -> None:
    """Until the view of `name` has a `.meta` for each tag (shown or refused)."""
    deadline = time.monotonic() + timeout
    want = {f"{tag}.meta" for tag in tags}
    while time.monotonic() < deadline:
        view = f"hroot/fs/{server.branch(name).removeprefix('hroot/')}:.hroot"
        code = run("git", "--git-dir", server.data, "ls-tree", "--name-only", view, check=False)
        if code.returncode == 0 and want <= set(code.stdout.decode().split()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no view of {name} {tags} after {timeout} s:\n{server.new_log()}")


def name_status(server: Hroot, name: str, old: str, new: str) -> list[str]:
    return server.git(
        "diff", "--name-status", f"hroot/fs/{name}:{old}", f"hroot/fs/{name}:{new}"
    ).splitlines()


@pytest.fixture(scope="module")
def versions(
    docker: Cli, fs_server: Hroot, busybox: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """fsapp:v1 imported from a rootfs, v2 changing /etc/hello and chmod/chown-ing
    /etc/conf, v3 deleting /etc/remove-me (a whiteout), each pushed by docker; the
    folder of their `docker save` archives, `<tag>.tar`."""
    work = tmp_path_factory.mktemp("fsapp")
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    for name, text in (("hello", "hello 1\n"), ("conf", "key=value\n"), ("remove-me", "bye\n")):
        (rootfs / "etc" / name).write_text(text)
    refs = {tag: fs_server.ref("fsapp", tag) for tag in VERSIONS}
    docker("import", "-", refs["v1"], input=run("tar", "-C", rootfs, "-c", ".").stdout)
    # another size: dockerd's vfs driver takes a file of the same size and second for unchanged
    (work / "hello").write_text("hello, version 2\n")
    steps = {
        "v2": f"FROM {refs['v1']}\nCOPY hello /etc/hello\n"
        "RUN /bin/busybox chmod 600 /etc/conf && /bin/busybox chown 1000:1000 /etc/conf\n",
        "v3": f"FROM {refs['v2']}\nRUN /bin/busybox rm /etc/remove-me\n",
    }
    push(docker, refs["v1"])
    for tag, dockerfile in steps.items():
        (work / "Dockerfile").write_text(dockerfile)
        docker("build", "-q", "-t", refs[tag], work)
        push(docker, refs[tag])
    for tag in VERSIONS:
        docker("save", "-o", work / f"{tag}.tar", refs[tag])
    return work


def test_docker_pushes_three_versions_whose_views_diff_as_changed(
    hroot: Hroot, versions: Path
) -> None:
    wait_for_view(hroot, "fsapp", VERSIONS)
    assert name_status(hroot, "fsapp", "v1", "v2") == ["M\tetc/hello"]
    assert name_status(hroot, "fsapp", "v2", "v3") == ["D\tetc/remove-me"]  # the whiteout
    assert hroot.git("show", "hroot/fs/fsapp:v2/etc/hello") == "hello, version 2\n"
    listing = hroot.git("ls-tree", "--format=%(path) %(objectmode)", "hroot/fs/fsapp:v1/bin")
    assert dict(line.split(" ") for line in listing.splitlines()) == {
        "busybox": "100755",
        "sh": "120000",
    }

    # chmod and chown: in the .meta, which git diff shows too
    meta = hroot.git(
        "diff", "-U0", "hroot/fs/fsapp:.hroot/v1.meta", "hroot/fs/fsapp:.hroot/v2.meta"
    )
    added = [line for line in meta.splitlines() if line.startswith("+/etc/conf ")]
    assert len(added) == 1 and added[0].startswith("+/etc/conf file 0600 1000:1000 ")
    assert not any(line.startswith("+/etc/remove-me") for line in meta.splitlines())

    diff = json.loads(hroot.cli("diff", "fsapp:v1", "fsapp:v2", "--json"))
    files = {change["path"]: change for change in diff["files"]}
    assert sorted(files) == ["/etc/conf", "/etc/hello"]
    conf = files["/etc/conf"]
    assert (conf["change"], conf["old_mode"], conf["new_mode"]) == ("changed", "0644", "0600")
    assert (conf["old_owner"], conf["new_owner"]) == ("0:0", "1000:1000")
    assert (files["/etc/hello"]["old_size"], files["/etc/hello"]["new_size"]) == (8, 17)
    out = hroot.cli("diff", "fsapp:v2", "fsapp:v3")
    assert "\nfiles\n  removed  /etc/remove-me  file  4 B\n" in out

    log = hroot.git("log", "--format=%s%n%(trailers:key=Image-Commit,valueonly)", "hroot/fs/fsapp")
    assert "fs view of fsapp: built v3" in log
    assert hroot.git("rev-parse", "hroot/fsapp").strip() in log.split()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_pushes_the_same_versions_and_the_views_agree(
    hroot: Hroot, versions: Path, skopeo: Cli, compression: str
) -> None:
    name = f"fsapp-skopeo-{compression}"
    for tag in VERSIONS:
        archive = versions / f"{tag}.tar"
        destination = f"docker://{hroot.ref(name, tag)}"
        compress = f"--dest-compress-format={compression}"
        skopeo(
            "copy", "--dest-tls-verify=false", compress, f"docker-archive:{archive}", destination
        )
    wait_for_view(hroot, name, VERSIONS)
    wait_for_view(hroot, "fsapp", VERSIONS)
    assert name_status(hroot, name, "v1", "v2") == ["M\tetc/hello"]
    assert name_status(hroot, name, "v2", "v3") == ["D\tetc/remove-me"]
    for tag in VERSIONS:  # other layers (recompressed by skopeo), the same files
        assert hroot.git("rev-parse", f"hroot/fs/{name}:{tag}") == hroot.git(
            "rev-parse", f"hroot/fs/fsapp:{tag}"
        )
