"""Who is asking, and may they: the decisions of registry.auth.middleware and of the token
endpoint, each refusal logged with who, what and why (never a password or a token)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from registry.access import ACTIONS, Rules
from registry.auth.htpasswd import Htpasswd
from registry.auth.tokens import (
    Claims,
    InvalidToken,
    Scope,
    Tokens,
    load_or_make_key,
    load_public_key,
)
from registry.common import POOLS
from registry.config import Config
from registry.errors import Unauthorized
from storage.errors import Denied

log = logging.getLogger("hroot.auth")

TOKEN_PATH = "/auth/token"
UI_PATH = "/ui/"
BASIC_REALM = "hroot"
HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a user (None: anonymous), and the token that said so, if any."""

    user: str | None
    claims: Claims | None = None

    def __str__(self) -> str:
        """For logs: escaped, so no user name can forge a line."""
        return (self.user or "anonymous").encode("unicode_escape").decode()


ANONYMOUS = Caller(None)


@dataclass(frozen=True)
class Need:
    """What a request needs. `kind`: "login" (any authenticated caller: GET /v2/),
    "catalog" (the repository listing), "browse" (the web pages: a person's browser, which
    speaks Basic), "repository" (`action` on `name`), or "everything" (`action` on every
    repository: git over HTTP, whose objects span all of them)."""

    kind: str
    name: str = ""
    action: str = ""

    def scope(self) -> str:
        """The scope a client asks the token endpoint for, to be allowed this."""
        if self.kind == "catalog":
            return "registry:catalog:*"
        if self.kind == "repository":
            actions = "pull,push" if self.action == "push" else self.action
            return f"repository:{self.name}:{actions}"
        return ""

    def __str__(self) -> str:
        if self.kind == "repository":
            return f"{self.action} {self.name}"
        return {"login": "log in", "catalog": "list repositories", "browse": "browse"}.get(
            self.kind, "read git"
        )


class Gate:
    """Authentication (htpasswd, tokens) and authorization (rules) of one registry."""

    def __init__(self, config: Config, repository: Path) -> None:
        self.rules: Rules = config.rules
        self.scheme = config.auth_challenge
        self.realm = config.token_realm
        self.htpasswd = Htpasswd(config.htpasswd) if config.htpasswd is not None else None
        signing = None
        if self.htpasswd is not None:  # hroot issues tokens to the users of its htpasswd
            # hroot/token-key.pem beside the branches: docs/format.md §5
            signing = load_or_make_key(config.token_key or repository / "hroot" / "token-key.pem")
        trusted = None
        if config.trusted_issuer is not None and config.trusted_issuer_key is not None:
            trusted = (config.trusted_issuer, load_public_key(config.trusted_issuer_key))
        # bcrypt is slow on purpose: a flood of guessed passwords may take at most half of
        # the read threads, so pulls of callers with tokens go on meanwhile.
        self._checking = asyncio.Semaphore(max(1, config.read_threads // 2))
        self.tokens = Tokens(
            signing, config.token_issuer, config.token_service, config.token_lifetime, trusted
        )

    # --- authentication ---------------------------------------------------------------

    def challenge(self, request: web.Request, need: Need, error: str | None = None) -> str:
        """The WWW-Authenticate header of a 401 for `need`."""
        if self.scheme == "basic" or need.kind in ("everything", "browse"):  # Basic only
            return f'Basic realm="{BASIC_REALM}"'
        realm = self.realm or f"{request.scheme}://{_host(request)}{TOKEN_PATH}"
        params = [f'realm="{realm}"', f'service="{self.tokens.service}"']
        if scope := need.scope():
            params.append(f'scope="{scope}"')
        if error:
            params.append(f'error="{error}"')
        return "Bearer " + ",".join(params)

    async def identify(self, request: web.Request, need: Need) -> Caller:
        """The caller of `request` by its Authorization header; 401 for credentials that do
        not hold."""
        header = request.headers.get("Authorization", "").strip()
        if not header:
            return ANONYMOUS
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            try:
                claims = self.tokens.verify(value.strip())
            except InvalidToken as e:
                self.refuse(request, ANONYMOUS, need, f"invalid token: {e}")
                raise Unauthorized(
                    self.challenge(request, need, "invalid_token"), message=f"invalid token: {e}"
                ) from None
            return Caller(claims.user, claims)
        if scheme.lower() == "basic":
            if (credentials := basic_credentials(value)) is None:
                self.refuse(request, ANONYMOUS, need, "malformed Basic credentials")
                raise Unauthorized(self.challenge(request, need), message="malformed credentials")
            return await self.log_in(request, need, *credentials)
        self.refuse(request, ANONYMOUS, need, f"unsupported authorization scheme {scheme!r}")
        raise Unauthorized(
            self.challenge(request, need), message=f"unsupported authorization scheme {scheme!r}"
        )

    async def log_in(self, request: web.Request, need: Need, user: str, password: str) -> Caller:
        """The user of these credentials, or 401."""
        if self.htpasswd is None or not await self._check(request, self.htpasswd, user, password):
            why = "no such user or wrong password"
            self.refuse(request, Caller(user), need, why)
            raise Unauthorized(self.challenge(request, need), message=why)
        return Caller(user)

    async def _check(
        self, request: web.Request, htpasswd: Htpasswd, user: str, password: str
    ) -> bool:
        async with self._checking:
            return await request.app[POOLS].read(htpasswd.check, user, password)

    # --- authorization ----------------------------------------------------------------

    def allows(self, caller: Caller, action: str, name: str) -> bool:
        """Whether `caller` may `action` the repository `name`: a token must grant it (unless
        anyone may), a password or anonymous caller must have it from the rules."""
        if caller.claims is not None:
            if action == "pull" and self.rules.allows(None, "pull", name):
                return True
            return caller.claims.grants("repository", name, action)
        return self.rules.allows(caller.user, action, name)

    def may_list(self, caller: Caller) -> bool:
        """Whether `caller` may list repositories (only those it may pull are shown)."""
        if caller.claims is not None:  # a token must say so: it may be scoped to one image
            return caller.claims.grants("registry", "catalog", "*")
        return caller.user is not None or self.rules.anyone_may_pull()

    def authorize(self, request: web.Request, caller: Caller, need: Need) -> None:
        """Return if `caller` may have `need`; else 401 (credentials could help: none were
        given, or the token lacks the scope) or 403 DENIED (they would not)."""
        if need.kind == "login":
            allowed = caller != ANONYMOUS
        elif need.kind == "catalog":
            allowed = self.may_list(caller)
        elif need.kind == "browse":  # git's rule: a browser speaks Basic, never tokens
            allowed = caller.claims is None and self.may_list(caller)
        elif need.kind == "everything":
            # git speaks Basic: a token, scoped to some repositories, never reads them all
            allowed = caller.claims is None and self.rules.allows_everywhere(
                caller.user, need.action
            )
        else:
            allowed = self.allows(caller, need.action, need.name)
        if allowed:
            return
        if (
            caller.user is not None
            and (caller.claims is None or caller.claims.own)
            and not self._rules_allow(caller.user, need)
        ):
            why = "not allowed by the registry's access rules"
            self.refuse(request, caller, need, why)
            raise Denied(f"{caller} may not {need}: {why}")
        why = "credentials needed" if caller.claims is None else "the token does not grant it"
        self.refuse(request, caller, need, why)
        error = "insufficient_scope" if caller.claims is not None else None
        raise Unauthorized(self.challenge(request, need, error), detail=_detail(need), message=why)

    def _rules_allow(self, user: str, need: Need) -> bool:
        """Whether the rules give `user` `need`: if not, no token or login would help."""
        if need.kind == "everything":
            return self.rules.allows_everywhere(user, need.action)
        if need.kind == "repository":
            return self.rules.allows(user, need.action, need.name)
        return True

    # --- the token endpoint -----------------------------------------------------------

    def grant(self, user: str | None, scopes: Iterable[Scope]) -> list[Scope]:
        """What of `scopes` `user` (None: anonymous) gets in a token: what the rules allow."""
        caller = Caller(user)
        granted = []
        for scope in scopes:
            if scope.type == "repository":
                actions = {
                    a for a in scope.actions & set(ACTIONS) if self.allows(caller, a, scope.name)
                }
            elif scope.type == "registry" and scope.name == "catalog":
                actions = {"*"} if self.may_list(caller) and "*" in scope.actions else set()
            else:
                actions = set()
            if actions:
                granted.append(Scope(scope.type, scope.name, frozenset(actions)))
        return granted

    @staticmethod
    def refuse(request: web.Request, caller: Caller, need: Need, why: str) -> None:
        log.info(
            "refused: %s from %s may not %s (%s %s): %s",
            caller,
            request.remote,
            need,
            request.method,
            request.raw_path,
            why,
        )


def _host(request: web.Request) -> str:
    """The host and port the client reached this server by, for the token realm; the
    listening address when the Host header is not a plain host[:port]."""
    if HOST.fullmatch(request.host):
        return request.host
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return "localhost"
    host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    return f"{host}:{sockname[1]}"


def basic_credentials(value: str) -> tuple[str, str] | None:
    """User and password of HTTP Basic credentials (base64 of `user:password`), if well-formed."""
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None


def _detail(need: Need) -> list[dict[str, str]] | None:
    """The `detail` of an UNAUTHORIZED error, as Distribution gives it: what was needed."""
    if need.kind != "repository":
        return None
    return [{"Type": "repository", "Name": need.name, "Action": need.action}]
