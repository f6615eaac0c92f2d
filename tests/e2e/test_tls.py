"""`hroot serve --tls-cert --tls-key` with certificate checks on: skopeo, podman, docker.

Each client is given a throwaway CA the way an operator would give it (tests.e2e.certs),
pushes and pulls over verified TLS, and fails with an x509 error without that CA.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .certs import Certs, make_ca_and_cert, outside_address
from .conftest import Cli, Hroot, ImageMaker, cat, import_image, serving

pytestmark = pytest.mark.e2e

VERIFY = "--tls-verify=true"  # the default, said out loud
UNKNOWN_CA = "x509: certificate signed by unknown authority"
DOCKER_CERTS = Path("/etc/docker/certs.d")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_ca_and_cert(tmp_path_factory.mktemp("certs"), "127.0.0.1")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Hroot]:
    """hroot over HTTPS on 127.0.0.1, with the certificate of `certs`."""
    root = tmp_path_factory.mktemp("tls")
    with serving(root / "hroot.git", root / "server.log", certs=certs) as server:
        yield server


def test_the_server_says_it_serves_https(tls_server: Hroot) -> None:
    assert f"on https://{tls_server.host}" in tls_server.log.read_text()


def test_skopeo_copies_over_verified_tls(
    skopeo: Cli, tls_server: Hroot, certs: Certs, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    digest = make_image(layout, "1", {"/etc/hello": b"over TLS\n"})
    ref = f"docker://{tls_server.ref('tls/skopeo', '1')}"

    skopeo("copy", "--preserve-digests", "--dest-tls-verify=true", "--dest-cert-dir",
           certs.ca_dir, f"oci:{layout}:1", ref)  # fmt: skip
    inspected = json.loads(skopeo("inspect", VERIFY, "--cert-dir", certs.ca_dir, ref))
    assert inspected["Digest"] == digest
    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=true", "--src-cert-dir", certs.ca_dir, ref, f"oci:{back}:1")
    assert json.loads(skopeo("inspect", f"oci:{back}:1"))["Digest"] == digest
    tls_server.assert_pushed("tls/skopeo", digest)

    code, out = skopeo.attempt("inspect", VERIFY, ref)
    assert code != 0 and UNKNOWN_CA in out, out
    tls_server.fsck()


def test_podman_pushes_and_pulls_over_verified_tls(
    podman: Cli, tls_server: Hroot, certs: Certs, make_image: ImageMaker, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    make_image(layout, "1", {"/etc/hello": b"podman over TLS\n"})
    image_id = podman("pull", "-q", f"oci:{layout}:1").strip()
    ref = tls_server.ref("tls/podman", "1")
    digest_file = tmp_path / "digest"

    podman("push", VERIFY, "--cert-dir", certs.ca_dir, "--digestfile", digest_file, image_id, ref)
    digest = digest_file.read_text().strip()
    tls_server.assert_pushed("tls/podman", digest)
    podman("rmi", "-f", image_id)
    podman("pull", "-q", VERIFY, "--cert-dir", certs.ca_dir, ref)
    assert podman("image", "inspect", "--format", "{{.Digest}}", ref).strip() == digest
    podman("rmi", "-f", ref)

    code, out = podman.attempt("pull", VERIFY, ref)
    assert code != 0 and UNKNOWN_CA in out, out
    tls_server.fsck()


@contextmanager
def docker_trusts(host: str, ca: Path) -> Iterator[None]:
    """`ca` in /etc/docker/certs.d/HOST:PORT/ca.crt, which dockerd reads on each connection;
    gone again afterwards, with /etc/docker/certs.d itself if this made it."""
    made_root = not DOCKER_CERTS.exists()
    folder = DOCKER_CERTS / host
    folder.mkdir(parents=True)
    try:
        shutil.copy(ca, folder / "ca.crt")
        yield
    finally:
        shutil.rmtree(folder)
        if made_root:
            DOCKER_CERTS.rmdir()


def test_docker_trusts_hroot_through_certs_d(docker: Cli, busybox: Path, tmp_path: Path) -> None:
    """On an address that is not loopback: dockerd skips certificate checks on 127.0.0.0/8."""
    ip = outside_address()
    certs = make_ca_and_cert(tmp_path / "certs", ip)
    with serving(tmp_path / "hroot.git", tmp_path / "server.log", ip=ip, certs=certs) as server:
        ref = server.ref("tls/docker", "1")
        code, out = docker.attempt("pull", ref)
        assert code != 0 and UNKNOWN_CA in out, out

        with docker_trusts(server.host, certs.ca):
            pushed = import_image(docker, busybox, tmp_path, ref)
            docker("rmi", ref)
            docker("pull", ref)
            assert cat(docker, ref, "/etc/hello") == pushed.token
        server.assert_pushed("tls/docker", pushed.digest)
        assert not (DOCKER_CERTS / server.host).exists()

        docker("rmi", ref)
        code, out = docker.attempt("pull", ref)
        assert code != 0 and UNKNOWN_CA in out, out
        server.fsck()
