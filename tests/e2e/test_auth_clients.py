"""Real clients log in to a `hroot serve --config` over TLS, with htpasswd users and rules.

docker, podman and skopeo log in through Docker's token flow (hroot's /auth/token), oras
and python-dxf with credentials, git with Basic credentials; each is refused what the
rules do not give it, and the server's log says who was refused what, with no secret.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .certs import Certs, make_ca_and_cert
from .conftest import Cli, Hroot, for_one_test, import_image, serving
from .tools import need_tool, run

pytestmark = pytest.mark.e2e

USERS = {"alice": "alice-" + secrets.token_hex(6), "bob": "bob-" + secrets.token_hex(6)}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_ca_and_cert(tmp_path_factory.mktemp("certs"), "127.0.0.1")


@pytest.fixture(scope="module")
def trust(certs: Certs) -> list[str]:
    """What skopeo and podman are told to trust the server's certificate."""
    return ["--cert-dir", str(certs.ca_dir)]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Hroot]:
    """A server where alice may do everything, bob may only pull, anyone may pull public/*;
    its htpasswd file written by `htpasswd -B` itself."""
    root = tmp_path_factory.mktemp("secured")
    htpasswd = root / "htpasswd"
    tool = need_tool("htpasswd")
    for n, (user, password) in enumerate(USERS.items()):
        run(tool, "-B", "-b", *(["-c"] if n == 0 else []), htpasswd, user, password)
    config = root / "hroot.toml"
    config.write_text(
        f'htpasswd = "{htpasswd}"\n'
        'anonymous_pull = ["public/*"]\n'
        '[[access]]\nnames = ["*"]\nactions = ["*"]\nusers = ["alice"]\n'
        '[[access]]\nnames = ["*"]\nactions = ["pull"]\nusers = ["bob"]\n'
    )
    log = root / "server.log"
    with serving(root / "hroot.git", log, "--config", str(config), certs=certs) as server:
        yield server


@pytest.fixture
def hroot(secured: Hroot) -> Iterator[Hroot]:
    """The secured server for one test."""
    yield from for_one_test(secured)


def assert_no_secrets(hroot: Hroot) -> None:
    text = hroot.log.read_text(errors="replace")
    for password in USERS.values():
        assert password not in text


def refused(code: int, out: str, *words: str) -> bool:
    """A client failed, saying one of `words` (its way of reporting a 401 or a 403)."""
    return code != 0 and any(word in out.lower() for word in words)


def test_docker_login_push_pull(docker: Cli, hroot: Hroot, busybox: Path, tmp_path: Path) -> None:
    ref, other = hroot.ref("team/app", "1"), hroot.ref("team/app", "2")
    try:
        code, out = docker.attempt("login", "-u", "alice", "-p", "wrong", hroot.host)
        assert refused(code, out, "401", "unauthorized"), out
        docker(
            "login", "-u", "alice", "--password-stdin", hroot.host, input=USERS["alice"].encode()
        )
        pushed = import_image(docker, busybox, tmp_path, ref)
        hroot.assert_pushed("team/app", pushed.digest)
        docker("logout", hroot.host)
        docker("rmi", ref)
        code, out = docker.attempt("pull", ref)
        assert refused(code, out, "unauthorized", "denied"), out

        docker("login", "-u", "bob", "--password-stdin", hroot.host, input=USERS["bob"].encode())
        docker("pull", ref)
        docker("tag", ref, other)
        commits = hroot.commits("team/app")
        code, out = docker.attempt("push", other)
        assert refused(code, out, "denied"), out
        assert hroot.commits("team/app") == commits
    finally:
        docker.attempt("logout", hroot.host)
        docker.attempt("rmi", "-f", ref, other)
    log = hroot.new_log()
    assert "login: alice from 127.0.0.1, granted" in log
    assert "refused: bob from 127.0.0.1 may not push team/app" in log
    assert_no_secrets(hroot)


def test_podman_and_skopeo_login(
    podman: Cli, skopeo: Cli, hroot: Hroot, make_image: Any, tmp_path: Path, trust: list[str]
) -> None:
    layout = tmp_path / "layout"
    make_image(layout, "v1", {"/etc/hello": secrets.token_bytes(64)})
    auth = ["--authfile", str(tmp_path / "auth.json")]
    ref, other = hroot.ref("pod/app", "v1"), hroot.ref("pod/app", "v2")
    source = f"oci:{layout}:v1"
    code, out = skopeo.attempt("copy", "--dest-cert-dir", trust[1], source, f"docker://{ref}")
    assert refused(code, out, "authentication required", "unauthorized", "denied"), out
    skopeo("login", *trust, *auth, "-u", "alice", "-p", USERS["alice"], hroot.host)
    skopeo("copy", "--dest-cert-dir", trust[1], *auth, source, f"docker://{ref}")
    creds = f"bob:{USERS['bob']}"
    digest = json.loads(skopeo("inspect", *trust, "--creds", creds, f"docker://{ref}"))["Digest"]
    hroot.assert_pushed("pod/app", digest)

    bob = ["login", *trust, *auth, "-u", "bob", "--password-stdin", hroot.host]
    podman(*bob, input=USERS["bob"].encode())
    podman("pull", *trust, *auth, ref)
    podman("tag", ref, other)
    commits = hroot.commits("pod/app")
    code, out = podman.attempt("push", *trust, *auth, other)
    assert refused(code, out, "denied"), out
    assert hroot.commits("pod/app") == commits
    alice = ["login", *trust, *auth, "-u", "alice", "--password-stdin", hroot.host]
    podman(*alice, input=USERS["alice"].encode())
    podman("push", *trust, *auth, other)
    assert len(hroot.commits("pod/app")) == len(commits) + 1
    podman("rmi", "--all", "--force")

    # Anyone pulls public/*, with no credentials at all (none from ~/.docker either:
    # skopeo falls back to it); nothing else.
    public = f"docker://{hroot.ref('public/app', 'v1')}"
    skopeo("copy", "--dest-cert-dir", trust[1], *auth, source, public)
    skopeo("inspect", *trust, "--no-creds", public)
    code, out = skopeo.attempt("inspect", *trust, "--no-creds", f"docker://{ref}")
    assert refused(code, out, "authentication required", "unauthorized", "denied"), out
    assert_no_secrets(hroot)


def test_oras_and_dxf_with_credentials(
    oras: ModuleType, dxf: ModuleType, hroot: Hroot, tmp_path: Path, certs: Certs
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(secrets.token_bytes(1000))
    # oras-py's default token backend re-sends a token that lacks a scope instead of asking
    # for a new one (as docker, podman and skopeo do on a 401 with error=insufficient_scope),
    # so its pushes fail against Distribution's token auth too; its basic backend works.
    client = oras.OrasClient(hostname=hroot.host, tls_verify=str(certs.ca), auth_backend="basic")
    client.login(  # into a config of its own, not the user's ~/.docker/config.json
        "alice",
        USERS["alice"],
        hostname=hroot.host,
        tls_verify=str(certs.ca),
        config_path=str(tmp_path / "docker-config.json"),
    )
    target = f"{hroot.host}/oras/app:v1"
    response = client.push(target=target, files=[str(source)], disable_path_validation=True)
    hroot.assert_pushed("oras/app", str(response.headers["Docker-Content-Digest"]))
    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(pulled[0]).read_bytes() == source.read_bytes()

    def as_user(user: str) -> Any:
        def auth(base: Any, response: Any) -> None:
            base.authenticate(user, USERS[user], response=response)

        return dxf.DXF(hroot.host, "dxf/app", auth=auth, tlsverify=str(certs.ca))

    blob = secrets.token_bytes(5000)
    (tmp_path / "blob").write_bytes(blob)
    digest = as_user("alice").push_blob(str(tmp_path / "blob"))
    assert b"".join(as_user("bob").pull_blob(digest)) == blob
    with pytest.raises(Exception, match=r"401|403|denied|unauthorized"):
        as_user("bob").push_blob(data=iter([b"nope"]), digest="sha256:" + "0" * 64)
    anonymous = dxf.DXF(hroot.host, "dxf/app", tlsverify=str(certs.ca))
    with pytest.raises(dxf.exceptions.DXFUnauthorizedError):
        anonymous.blob_size(digest)


def test_git_clone_needs_credentials(hroot: Hroot, tmp_path: Path, certs: Certs) -> None:
    git = [need_tool("git"), "-c", f"http.sslCAInfo={certs.ca}"]
    url = f"https://{hroot.host}/git/"
    env = {"GIT_TERMINAL_PROMPT": "0", "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    anonymous = run(*git, "clone", "--mirror", url, tmp_path / "anonymous", check=False, env=env)
    assert anonymous.returncode != 0 and b"could not read Username" in anonymous.stderr
    wrong = url.replace("https://", "https://bob:wrong@")
    guessed = run(*git, "clone", "--mirror", wrong, tmp_path / "guessed", check=False, env=env)
    assert guessed.returncode != 0 and b"Authentication failed" in guessed.stderr
    authed = url.replace("https://", f"https://bob:{USERS['bob']}@")
    run(*git, "clone", "--mirror", authed, tmp_path / "bob", env=env)
    refs = run(*git, "--git-dir", tmp_path / "bob", "for-each-ref", "--format=%(refname)").stdout
    assert (
        refs.decode().split()
        == hroot.git("for-each-ref", "--format=%(refname)", "refs/heads/hroot/").split()
    )
