"""A throwaway certificate authority and a server certificate it signed, made with `openssl`.

Clients are given the CA the way operators give it to them: skopeo and podman a
`--cert-dir` holding only `ca.crt` (a `*.key` there would be taken for a client key),
docker a copy of it in `/etc/docker/certs.d/HOST:PORT/ca.crt`.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import pytest

from .tools import need_tool, run


@dataclass(frozen=True)
class Certs:
    ca_dir: Path  # holds ca.crt and nothing else: a --cert-dir
    ca: Path  # ca_dir / "ca.crt"
    cert: Path  # the server's certificate (PEM), for --tls-cert
    key: Path  # its unencrypted private key (PEM), for --tls-key


def make_ca_and_cert(folder: Path, ip: str) -> Certs:
    """A CA and a certificate for a server reached at `ip` (subjectAltName IP:ip), both
    valid for two days, with P-256 keys, in `folder`."""
    openssl = need_tool("openssl")
    ca_dir = folder / "ca"
    ca_dir.mkdir(parents=True)
    ca, ca_key = ca_dir / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=hroot test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run(openssl, "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={ip}")
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName = IP:{ip}\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
    )
    run(openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-out", cert,
        "-days", "2", "-set_serial", str(secrets.randbits(63)), "-extfile", extensions)  # fmt: skip
    return Certs(ca_dir, ca, cert, key)


def outside_address() -> str:
    """An IPv4 address of this machine that is not loopback: the source address of a route
    to 192.0.2.1 (a UDP socket sends nothing when it connects), else one of `hostname -I`.

    Fails the test when there is none: docker treats registries on 127.0.0.0/8 as insecure
    and skips certificate checks there, so only such an address tests docker's TLS.
    """
    candidates: list[str] = []
    with suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # OSError: no route there
        candidates.append(probe.getsockname()[0])
    with suppress(OSError):  # no `hostname` command
        listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
        candidates += listed.stdout.split()
    for candidate in candidates:
        address = ip_address(candidate)
        if address.version == 4 and not address.is_loopback:
            return candidate
    pytest.fail(f"no non-loopback IPv4 address on this machine (found {candidates})")
