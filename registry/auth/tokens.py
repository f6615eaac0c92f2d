"""Signed bearer tokens of Docker's token flow: hroot's own, and an external issuer's.

A token is a JWT as Docker's token specification describes it: `iss`, `sub` (the user,
empty for anonymous), `aud` (the registry's service name), `exp`, `nbf`, `iat`, `jti` and
`access`, the list of `{type, name, actions}` it grants. hroot signs its own with an EC
P-256 key (ES256), made on first start beside the repository (docs/format.md §5) unless
one is configured; tokens of a trusted external issuer, as Distribution's `auth.token`
accepts them, are checked against that issuer's public key or certificate.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

ALGORITHM = "ES256"
# Clock difference tolerated between hroot and an issuer when checking exp and nbf.
LEEWAY_SECONDS = 10


class InvalidToken(ValueError):
    """A token that is malformed, badly signed, expired, or for another service."""


@dataclass(frozen=True)
class Scope:
    """One `type:name:actions` item, as in a token request's `scope` or a token's `access`."""

    type: str  # "repository", or "registry" for the catalog
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """`repository:team/app:pull,push`; the name may not hold a colon, the actions may be
        empty."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            raise ValueError(f"scope {text!r} is not TYPE:NAME:ACTIONS")
        return cls(kind.split("(")[0], name, frozenset(filter(None, actions.split(","))))

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class Claims:
    """What a verified token says: who, and what it grants."""

    user: str | None  # None: issued to an anonymous caller
    access: tuple[Scope, ...]
    own: bool  # issued by this registry (its grants follow this registry's rules)

    def grants(self, kind: str, name: str, action: str) -> bool:
        return any(
            s.type == kind and s.name == name and (action in s.actions or "*" in s.actions)
            for s in self.access
        )


def load_or_make_key(path: Path) -> PrivateKeyTypes:
    """The signing key at `path`, made (EC P-256, mode 0600) if there is none yet."""
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_public_key(path: Path) -> PublicKeyTypes:
    """A PEM public key, or the key of a PEM certificate (what Distribution's
    `rootcertbundle` holds)."""
    data = path.read_bytes()
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def _algorithms(key: PublicKeyTypes) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ["ES256", "ES384", "ES512"]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ["EdDSA"]
    raise ValueError(f"unsupported public key type {type(key).__name__}")


class Tokens:
    """Issues this registry's tokens and verifies them and a trusted issuer's."""

    def __init__(
        self,
        signing_key: PrivateKeyTypes | None,
        issuer: str,
        service: str,
        lifetime: float,
        trusted: tuple[str, PublicKeyTypes] | None = None,
    ) -> None:
        self._signing_key = signing_key
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime
        self._keys: dict[str, PublicKeyTypes] = {}
        if signing_key is not None:
            self._keys[issuer] = signing_key.public_key()  # type: ignore[union-attr]
        if trusted is not None:
            self._keys[trusted[0]] = trusted[1]

    def issue(self, user: str | None, access: Iterable[Scope]) -> tuple[str, int]:
        """A signed token for `user` granting `access`, and its lifetime in whole seconds."""
        if self._signing_key is None:
            raise RuntimeError("this registry issues no tokens (no htpasswd)")
        now = int(time.time())
        lifetime = max(1, round(self.lifetime))
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "iat": now,
            "nbf": now - LEEWAY_SECONDS,
            "exp": now + lifetime,
            "jti": secrets.token_hex(16),
            "access": [scope.claim() for scope in access],
        }
        return jwt.encode(claims, self._signing_key, algorithm=ALGORITHM), lifetime

    def verify(self, token: str) -> Claims:
        """The claims of `token` if it is signed by a key this registry trusts, for this
        service, and current; InvalidToken (saying why) otherwise."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            key = self._keys.get(issuer) if isinstance(issuer, str) else None
            if key is None:
                raise InvalidToken(f"issuer {issuer!r} is not trusted")
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=_algorithms(key),
                audience=self.service,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
            access = tuple(
                Scope(str(item["type"]), str(item["name"]), frozenset(map(str, item["actions"])))
                for item in claims.get("access") or ()
            )
        except InvalidToken:
            raise
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidToken(f"malformed access claim: {e}") from None
        own = issuer == self.issuer and self._signing_key is not None
        return Claims(str(claims.get("sub") or "") or None, access, own)
