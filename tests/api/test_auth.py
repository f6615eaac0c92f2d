"""Authentication and authorization over the real app and store (registry.auth).

The matrix test is the issue's auth matrix: each kind of caller against every endpoint,
with the status, the error code and the WWW-Authenticate challenge it must get.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from registry.access import Grant
from storage import Store
from tests.api.helpers import Api, Image, assert_error
from tests.documents import digest_of, image_manifest

MakeApi = Callable[..., Awaitable[Api]]

PASSWORDS = {
    "admin": "admin-pw",
    "reader": "reader-pw",
    "pusher": "pusher-pw",
    "deleter": "deleter-pw",
    "tina": "tina-pw",
}
GRANTS = (
    Grant(("*",), frozenset({"pull", "push", "delete"}), users=frozenset({"admin"})),
    Grant(("*",), frozenset({"pull"}), users=frozenset({"reader"})),
    Grant(("*",), frozenset({"pull", "push"}), users=frozenset({"pusher"})),
    Grant(("*",), frozenset({"pull", "delete"}), users=frozenset({"deleter"})),
    Grant(("team/*",), frozenset({"pull", "push", "delete"}), groups=frozenset({"team"})),
)


def write_htpasswd(path: Path, passwords: dict[str, str]) -> Path:
    """An htpasswd file of bcrypt entries ($2y$, as `htpasswd -B` writes; cost 4 for speed)."""
    lines = [
        f"{user}:" + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")
        for user, pw in passwords.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / "htpasswd", PASSWORDS)


@pytest.fixture
def secured(make_api: MakeApi, htpasswd: Path) -> Callable[..., Awaitable[Api]]:
    """An Api with authentication on: the users above, their grants, public/* anonymous."""

    async def make(**settings: Any) -> Api:
        defaults: dict[str, Any] = {
            "htpasswd": htpasswd,
            "access": GRANTS,
            "groups": {"team": ("tina",)},
            "anonymous_pull": ("public/*",),
        }
        return await make_api(**{**defaults, **settings})

    return make


async def token_for(api: Api, user: str | None, *scopes: str) -> str:
    headers = basic(user, PASSWORDS[user]) if user else {}
    query = [("service", "hroot"), *(("scope", s) for s in scopes)]
    resp = await api.client.get("/auth/token", params=query, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["token"] == body["access_token"]
    return str(body["token"])


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def state(store: Store) -> tuple[str, list[str], list[str]]:
    """Every ref, every object file and every upload spool: what a refused push must not
    change."""
    refs = subprocess.run(
        ["git", "--git-dir", store.path, "for-each-ref", "--format=%(refname) %(objectname)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    objects = sorted(str(p.relative_to(store.path)) for p in (store.path / "objects").rglob("*"))
    spools = sorted(p.name for p in (store.path / "hroot" / "uploads").iterdir())
    return refs, objects, spools


# --- the matrix -----------------------------------------------------------------------


class Scene:
    """A repository `app` with an image, an extra manifest and upload sessions to act on."""

    def __init__(self, image: Image, other: Image, sessions: list[str], new: bytes) -> None:
        self.image = image
        self.other = other
        self.sessions = sessions  # Locations of four open upload sessions
        self.new = new  # a manifest whose blobs are in `app`, not yet pushed

    def requests(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        layer = digest_of(self.image.layers[0])
        s = self.sessions
        return {
            "GET /v2/": ("GET", "/v2/", {}),
            "GET _catalog": ("GET", "/v2/_catalog", {}),
            "GET tags/list": ("GET", "/v2/app/tags/list", {}),
            "GET manifest": ("GET", "/v2/app/manifests/v1", {}),
            "HEAD manifest": ("HEAD", "/v2/app/manifests/v1", {}),
            "PUT manifest": (
                "PUT",
                "/v2/app/manifests/v2",
                {
                    "data": self.new,
                    "headers": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                },
            ),
            "DELETE manifest": ("DELETE", f"/v2/app/manifests/{self.other.digest}", {}),
            "GET blob": ("GET", f"/v2/app/blobs/{layer}", {}),
            "HEAD blob": ("HEAD", f"/v2/app/blobs/{layer}", {}),
            "DELETE blob": ("DELETE", f"/v2/app/blobs/{digest_of(self.other.layers[0])}", {}),
            "POST upload": ("POST", "/v2/app/blobs/uploads/", {}),
            "GET upload": ("GET", s[0], {}),
            "PATCH upload": ("PATCH", s[1], {"data": b"abc"}),
            "PUT upload": ("PUT", s[2] + f"?digest={digest_of(b'abc')}", {"data": b"abc"}),
            "DELETE upload": ("DELETE", s[3], {}),
            "GET referrers": ("GET", f"/v2/app/referrers/{self.image.digest}", {}),
            "GET /git/": ("GET", "/git/info/refs?service=git-upload-pack", {}),
        }


ALLOWED = {
    "GET /v2/": 200,
    "GET _catalog": 200,
    "GET tags/list": 200,
    "GET manifest": 200,
    "HEAD manifest": 200,
    "PUT manifest": 201,
    "DELETE manifest": 202,
    "GET blob": 200,
    "HEAD blob": 200,
    "DELETE blob": 202,
    "POST upload": 202,
    "GET upload": 204,
    "PATCH upload": 202,
    "PUT upload": 201,
    "DELETE upload": 204,
    "GET referrers": 200,
    "GET /git/": 200,
}
PULLS = {"GET tags/list", "GET manifest", "HEAD manifest", "GET blob", "HEAD blob"}
PULLS |= {"GET referrers"}
PUSHES = {"PUT manifest", "POST upload", "GET upload", "PATCH upload", "PUT upload"}
PUSHES |= {"DELETE upload"}
DELETES = {"DELETE manifest", "DELETE blob"}


def expect(caller: str, request: str) -> str:
    """The answer `caller` must get for `request`: a status, or `401 <challenge error>`."""
    if caller == "anonymous" and request == "GET _catalog":
        return "200"  # anyone may pull public/*: the catalog shows them that, nothing else
    if caller in ("anonymous", "wrong password"):
        return "401"
    if caller == "expired token":
        return "401 invalid_token"
    if caller == "token for another repository" or caller in USERS:
        # Tokens grant what they name (here repository:other or repository:app); the
        # catalog needs registry:catalog:*, git Basic credentials.
        if request == "GET _catalog":
            return "401 insufficient_scope"
        if request == "GET /git/":
            return "401"
    if caller == "token for another repository":
        scoped = PULLS | PUSHES | DELETES
        return "401 insufficient_scope" if request in scoped else str(ALLOWED[request])
    may = {
        "pull-only user": PULLS,
        "push user": PULLS | PUSHES,
        "delete user": PULLS | DELETES,
    }[caller]
    if request in may or request == "GET /v2/":
        return str(ALLOWED[request])
    return "403"


CALLERS = [
    "anonymous",
    "wrong password",
    "expired token",
    "token for another repository",
    "pull-only user",
    "push user",
    "delete user",
]
USERS = {"pull-only user": "reader", "push user": "pusher", "delete user": "deleter"}


async def _scene(admin: Api) -> Scene:
    image = await admin.push_image("app", "v1", layers=(b"app layer",))
    other = await admin.push_image("app", "old", layers=(b"old layer",))
    config = json.dumps({"os": "linux", "new": True}).encode()
    await admin.push_blob("app", config)
    new = image_manifest(config, [b"app layer"])
    sessions = [await admin.start_upload("app") for _ in range(4)]
    return Scene(image, other, sessions, new)


async def _headers_of(api: Api, caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "wrong password":
        return basic("reader", "not-the-password")
    if caller == "expired token":
        token = await token_for(api, "admin", "repository:app:pull,push,delete")
        claims = {**claims_of(token), "exp": int(time.time()) - 3600}
        key = serialization.load_pem_private_key(
            (api.store_path / "hroot" / "token-key.pem").read_bytes(), None
        )
        return bearer(jwt.encode(claims, key, algorithm="ES256"))  # type: ignore[arg-type]
    if caller == "token for another repository":
        return bearer(await token_for(api, "admin", "repository:other:pull,push,delete"))
    user = USERS[caller]
    return bearer(await token_for(api, user, "repository:app:pull,push,delete"))


@pytest.mark.parametrize("caller", CALLERS)
async def test_auth_matrix(caller: str, make_api: MakeApi, secured: MakeApi, store: Store) -> None:
    scene = await _scene(await make_api())
    api = await secured()
    api.store_path = store.path  # type: ignore[attr-defined]
    headers = await _headers_of(api, caller)
    if caller in USERS:
        assert claims_of(headers["Authorization"][7:])["sub"] == USERS[caller]
    seen = {}
    for request, (method, path, kwargs) in scene.requests().items():
        kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers}}
        resp = await api.client.request(method, path, **kwargs)
        wanted = expect(caller, request)
        status, _, error = wanted.partition(" ")
        seen[request] = resp.status
        if status == "401":
            await assert_error(resp, 401, "UNAUTHORIZED")
            challenge = resp.headers["WWW-Authenticate"]
            if request == "GET /git/":
                assert challenge == 'Basic realm="hroot"'
            else:
                assert challenge.startswith('Bearer realm="http://'), challenge
                assert '/auth/token",service="hroot"' in challenge
                if request in PULLS | PUSHES | DELETES:
                    assert 'scope="repository:app:' in challenge, challenge
                assert (f'error="{error}"' in challenge) == bool(error), challenge
        elif status == "403":
            await assert_error(resp, 403, "DENIED")
        else:
            assert resp.status == int(status), (request, await resp.text())
    assert all(str(seen[r]) == expect(caller, r).split()[0] for r in seen), seen


async def test_refused_pushes_write_nothing(
    make_api: MakeApi, secured: MakeApi, store: Store
) -> None:
    """A push refused at any step leaves every ref, object and spool as it was."""
    admin = await make_api()
    await admin.push_image("app", "v1", layers=(b"app layer",))
    session = await admin.start_upload("app")
    api = await secured()
    reader = bearer(await token_for(api, "reader", "repository:app:pull,push"))
    before = state(store)
    blob = b"a blob no one may push"
    config = json.dumps({"os": "linux"}).encode()
    for headers in ({}, reader, basic("reader", PASSWORDS["reader"]), basic("pusher", "wrong")):
        attempts = [
            ("POST", f"/v2/app/blobs/uploads/?digest={digest_of(blob)}", blob),
            ("POST", "/v2/newrepo/blobs/uploads/", None),
            ("PATCH", session, blob),
            ("PUT", f"{session}?digest={digest_of(blob)}", blob),
            ("PUT", "/v2/app/manifests/v9", image_manifest(config, [b"app layer"])),
            ("DELETE", "/v2/app/manifests/v1", None),
            ("POST", f"/v2/app/blobs/uploads/?mount={digest_of(b'app layer')}&from=app", None),
        ]
        for method, path, data in attempts:
            resp = await api.client.request(method, path, data=data, headers=headers)
            assert resp.status in (401, 403), (method, path, resp.status)
    assert state(store) == before


async def test_anonymous_pull_and_filtered_listings(make_api: MakeApi, secured: MakeApi) -> None:
    admin = await make_api()
    public = await admin.push_image("public/base", "1")
    for name in ("app", "team/a", "team/b/c"):
        await admin.push_image(name, "1")
    api = await secured()
    # Anyone pulls public/*, without any credentials, and sees only it in the catalog.
    resp = await api.client.get(f"/v2/public/base/manifests/{public.digest}")
    assert resp.status == 200
    resp = await api.client.get("/v2/_catalog")
    assert (await resp.json())["repositories"] == ["public/base"]
    # The token endpoint gives anonymous callers what the rules give them and nothing more.
    token = await token_for(api, None, "repository:public/base:pull,push", "repository:app:pull")
    assert claims_of(token)["access"] == [
        {"type": "repository", "name": "public/base", "actions": ["pull"]}
    ]
    assert claims_of(token)["sub"] == ""
    # tina is in group team: team/* and public/* only, catalog filtered and paged.
    tina = basic("tina", PASSWORDS["tina"])
    resp = await api.client.get("/v2/_catalog?n=2", headers=tina)
    assert (await resp.json())["repositories"] == ["public/base", "team/a"]
    assert "last=team%2Fa" in resp.headers["Link"]
    resp = await api.client.get("/v2/_catalog?n=2&last=team/a", headers=tina)
    assert (await resp.json())["repositories"] == ["team/b/c"]
    token = bearer(await token_for(api, "tina", "registry:catalog:*"))
    resp = await api.client.get("/v2/_catalog", headers=token)
    assert (await resp.json())["repositories"] == ["public/base", "team/a", "team/b/c"]
    await assert_error(await api.client.get("/v2/app/tags/list", headers=tina), 403, "DENIED")
    resp = await api.client.put("/v2/team/new/blobs/uploads/", headers=tina)
    assert resp.status == 405  # a wrong method stays a 405 for anyone
    resp = await api.client.post("/v2/team/new/blobs/uploads/", headers=tina)
    assert resp.status == 202
    # git over HTTP serves every repository's objects: tina may not read it.
    resp = await api.client.get("/git/info/refs?service=git-upload-pack", headers=tina)
    await assert_error(resp, 403, "DENIED")


async def test_mount_needs_pull_on_its_source(make_api: MakeApi, secured: MakeApi) -> None:
    """A mount from a repository the caller may not pull becomes a plain upload (202)."""
    admin = await make_api()
    secret = await admin.push_image("app", "1", layers=(b"secret layer",))
    api = await secured()
    tina = basic("tina", PASSWORDS["tina"])
    layer = digest_of(secret.layers[0])
    resp = await api.client.post(f"/v2/team/x/blobs/uploads/?mount={layer}&from=app", headers=tina)
    assert resp.status == 202
    resp = await api.client.head(f"/v2/team/x/blobs/{layer}", headers=tina)
    assert resp.status == 404
    admin_token = basic("admin", PASSWORDS["admin"])
    resp = await api.client.post(
        f"/v2/team/x/blobs/uploads/?mount={layer}&from=app", headers=admin_token
    )
    assert resp.status == 201


async def test_token_endpoint(secured: MakeApi) -> None:
    api = await secured(token_lifetime=120)
    # docker login: GET with Basic credentials and no scope.
    resp = await api.client.get("/auth/token?service=hroot", headers=basic("reader", "wrong"))
    await assert_error(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="hroot"'
    resp = await api.client.get(
        "/auth/token?service=hroot&scope=repository:app:pull,push&scope=registry:catalog:*",
        headers=basic("reader", PASSWORDS["reader"]),
    )
    body = await resp.json()
    assert resp.status == 200 and body["expires_in"] == 120
    claims = claims_of(body["token"])
    assert claims["access"] == [
        {"type": "repository", "name": "app", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert (claims["iss"], claims["aud"], claims["sub"]) == ("hroot", "hroot", "reader")
    assert claims["exp"] - claims["iat"] == 120
    # The OAuth2 password grant, as docker posts it.
    resp = await api.client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "pusher",
            "password": PASSWORDS["pusher"],
            "service": "hroot",
            "scope": "repository:app:pull,push repository:x:delete",
            "client_id": "docker",
        },
    )
    body = await resp.json()
    assert resp.status == 200 and body["scope"] == "repository:app:pull,push"
    resp = await api.client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x"}
    )
    await assert_error(resp, 400, "UNSUPPORTED")
    resp = await api.client.get("/auth/token?service=elsewhere")
    await assert_error(resp, 400, "UNSUPPORTED")
    resp = await api.client.get("/auth/token?scope=repository:nonsense")
    await assert_error(resp, 400, "UNSUPPORTED")


async def test_no_token_endpoint_without_auth(api: Api) -> None:
    await assert_error(await api.client.get("/auth/token"), 404, "NOT_FOUND")


async def test_basic_challenge(secured: MakeApi) -> None:
    """auth_challenge = "basic": the password on every request, as Distribution's htpasswd."""
    api = await secured(auth_challenge="basic")
    resp = await api.client.get("/v2/")
    await assert_error(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="hroot"'
    resp = await api.client.get("/v2/", headers=basic("reader", PASSWORDS["reader"]))
    assert resp.status == 200


async def test_htpasswd_is_read_again_when_it_changes(secured: MakeApi, htpasswd: Path) -> None:
    api = await secured()
    newcomer = basic("newcomer", "new-pw")
    await assert_error(await api.client.get("/v2/", headers=newcomer), 401, "UNAUTHORIZED")
    write_htpasswd(htpasswd, {**PASSWORDS, "newcomer": "new-pw", "reader": "changed"})
    assert (await api.client.get("/v2/", headers=newcomer)).status == 200
    old = basic("reader", PASSWORDS["reader"])
    await assert_error(await api.client.get("/v2/", headers=old), 401, "UNAUTHORIZED")


def issuer_certificate(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed certificate of `key`, as Distribution's rootcertbundle holds them."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("trusted_as", ["public key", "certificate"])
async def test_trusted_external_issuer(secured: MakeApi, tmp_path: Path, trusted_as: str) -> None:
    """Tokens of an issuer hroot trusts by its public key (or certificate) are accepted;
    others are not."""
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "issuer.pem"
    public.write_bytes(
        issuer_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if trusted_as == "public key"
        else issuer_certificate(issuer_key)
    )
    api = await secured(
        trusted_issuer="auth.example",
        trusted_issuer_key=public,
        token_realm="https://auth.example/token",
    )

    def external(key: rsa.RSAPrivateKey, actions: list[str], issuer: str = "auth.example") -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": "someone",
            "aud": "hroot",
            "exp": now + 60,
            "nbf": now,
            "iat": now,
            "access": [{"type": "repository", "name": "ext", "actions": actions}],
        }
        return jwt.encode(claims, key, algorithm="RS256")

    resp = await api.client.post(
        "/v2/ext/blobs/uploads/", headers=bearer(external(issuer_key, ["pull", "push"]))
    )
    assert resp.status == 202
    resp = await api.client.post(
        "/v2/ext/blobs/uploads/", headers=bearer(external(issuer_key, ["pull"]))
    )
    await assert_error(resp, 401, "UNAUTHORIZED")
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="https://auth.example/token",service="hroot"')
    assert 'error="insufficient_scope"' in challenge
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        external(stranger, ["pull", "push"]),
        external(stranger, ["pull", "push"], issuer="hroot"),
        "not.a.token",
    ):
        resp = await api.client.post("/v2/ext/blobs/uploads/", headers=bearer(token))
        await assert_error(resp, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_logs_say_who_and_why_never_a_secret(
    secured: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await secured()
    caplog.set_level(logging.INFO)
    await api.client.get("/v2/app/tags/list", headers=basic("reader", "guess-1"))
    token = await token_for(api, "reader", "repository:app:pull,push")
    await api.client.post("/v2/app/blobs/uploads/", headers=bearer(token))
    text = caplog.text
    assert "refused: reader from 127.0.0.1 may not pull app" in text
    assert "no such user or wrong password" in text
    assert "login: reader from 127.0.0.1, granted repository:app:pull" in text
    assert "refused: reader from 127.0.0.1 may not push app" in text
    assert '127.0.0.1 reader "POST /v2/app/blobs/uploads/" 403' in text  # the access log
    for secret in ("guess-1", PASSWORDS["reader"], token, token.split(".")[2]):
        assert secret not in text


def test_token_key_is_made_once_and_private(htpasswd: Path, store: Store, tmp_path: Path) -> None:
    from registry.auth.gate import Gate
    from registry.config import Config

    config = Config(data=store.path, htpasswd=htpasswd)
    Gate(config, store.path)
    key = store.path / "hroot" / "token-key.pem"
    assert os.stat(key).st_mode & 0o777 == 0o600
    first = hashlib.sha256(key.read_bytes()).hexdigest()
    Gate(config, store.path)
    assert hashlib.sha256(key.read_bytes()).hexdigest() == first


async def test_guessed_passwords_do_not_stall_pulls(
    make_api: MakeApi, secured: MakeApi, htpasswd: Path
) -> None:
    """bcrypt takes at most half the read threads: with a flood of wrong passwords against a
    costly entry under way, a pull with a token is answered at once."""
    admin = await make_api()
    image = await admin.push_image("app", "v1")
    costly = bcrypt.hashpw(b"pw", bcrypt.gensalt(13)).decode()  # about 0.5 s a check
    htpasswd.write_text(htpasswd.read_text() + f"victim:{costly}\n")
    api = await secured(read_threads=2)
    token = bearer(await token_for(api, "reader", "repository:app:pull"))
    guesses = [
        asyncio.ensure_future(api.client.get("/v2/", headers=basic("victim", f"guess-{n}")))
        for n in range(12)
    ]
    await asyncio.sleep(0.1)  # the guesses are being checked
    start = time.monotonic()
    resp = await api.client.get(f"/v2/app/manifests/{image.digest}", headers=token)
    waited = time.monotonic() - start
    assert resp.status == 200
    assert not all(g.done() for g in guesses)
    assert waited < 0.5, f"a pull waited {waited:.2f} s behind password checks"
    for guess in await asyncio.gather(*guesses):
        assert guess.status == 401


async def test_what_a_client_says_cannot_forge_logs_or_challenges(
    secured: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await secured()
    caplog.set_level(logging.INFO)
    forged = "mallory\nINFO hroot.auth login: admin"
    await api.client.get("/v2/", headers=basic(forged, "x"))
    assert not any(line.startswith("INFO hroot.auth login") for line in caplog.text.splitlines())
    assert "mallory\\nINFO" in caplog.text
    resp = await api.client.get("/v2/", headers={"Host": 'evil"host'})
    challenge = resp.headers["WWW-Authenticate"]
    assert "evil" not in challenge and challenge.startswith('Bearer realm="http://127.0.0.1:')
