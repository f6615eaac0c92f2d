"""`hroot serve --tls-cert --tls-key` as a real process, seen from Python's ssl module: what
TLS it speaks, and the certificate and key files it refuses before touching anything."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api.test_cli import _serve
from tests.e2e.certs import Certs, make_ca_and_cert
from tests.e2e.conftest import Hroot, serving
from tests.e2e.tools import free_port, need_tool, run

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_ca_and_cert(tmp_path_factory.mktemp("certs"), HOST)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Hroot]:
    root = tmp_path_factory.mktemp("https")
    with serving(root / "hroot.git", root / "server.log", certs=certs) as server:
        yield server


def handshake(server: Hroot, context: ssl.SSLContext) -> ssl.SSLSocket:
    port = int(server.host.rsplit(":", 1)[1])
    return context.wrap_socket(
        socket.create_connection((HOST, port), timeout=10), server_hostname=HOST
    )


def test_https_is_tls_1_2_or_newer_and_http_1_1(server: Hroot, certs: Certs) -> None:
    context = ssl.create_default_context(cafile=certs.ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(server, context) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.compression() is None
        tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: hroot\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"{}"
    assert b"\r\nServer: hroot\r\n" in head


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(server: Hroot, certs: Certs) -> None:
    """A client that allows old protocols (security level 0) gets TLS 1.2, and nothing
    when it offers at most TLS 1.1."""
    old = ssl.create_default_context(cafile=certs.ca)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake(server, old) as tls:
        assert tls.version() == "TLSv1.2"
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server, old).close()


def test_a_client_without_the_ca_is_refused(server: Hroot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, ssl.create_default_context()).close()


def _mismatched_key(tmp_path: Path, certs: Certs) -> tuple[Path, Path, str]:
    other = make_ca_and_cert(tmp_path / "other", HOST)
    return certs.cert, other.key, f"the key {other.key} is not the key of the certificate"


def _encrypted_key(tmp_path: Path, certs: Certs) -> tuple[Path, Path, str]:
    key = tmp_path / "encrypted.key"
    run(need_tool("openssl"), "pkey", "-in", certs.key, "-aes256", "-passout", "pass:secret",
        "-out", key)  # fmt: skip
    return certs.cert, key, f"the key {key} is encrypted: hroot needs an unencrypted key"


def _not_pem(tmp_path: Path, certs: Certs) -> tuple[Path, Path, str]:
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    return text, certs.key, f"{text} must hold a PEM certificate (chain)"


def _missing(tmp_path: Path, certs: Certs) -> tuple[Path, Path, str]:
    gone = tmp_path / "gone.crt"
    return gone, certs.key, f"cannot read {gone}: No such file or directory"


@pytest.mark.parametrize(
    "files", [_mismatched_key, _encrypted_key, _not_pem, _missing], ids=lambda f: f.__name__[1:]
)
def test_unusable_tls_files_are_refused_in_one_line_before_the_repository(
    tmp_path: Path, certs: Certs, files: Callable[[Path, Certs], tuple[Path, Path, str]]
) -> None:
    cert, key, reason = files(tmp_path, certs)
    listen = f"{HOST}:{free_port()}"
    done = _serve(
        "--listen", listen, "--tls-cert", cert, "--tls-key", key, "--data", "new.git", cwd=tmp_path
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"ERROR hroot.registry cannot serve HTTPS: {reason}" in line
    assert not (tmp_path / "new.git").exists()
