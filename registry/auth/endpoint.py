"""GET and POST /auth/token: hroot's token endpoint in Docker's token flow.

GET takes HTTP Basic credentials (none: an anonymous token) and `scope` parameters, as
docker, podman, skopeo and oras ask; POST takes the OAuth2 password grant as a form, as
docker does for identity tokens. The token grants what the registry's rules allow of what
was asked (the rest is left out, as Docker's token specification says); wrong
credentials get 401. Every login is logged with the user and what was granted.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from registry.auth.gate import BASIC_REALM, Caller, Gate, Need, basic_credentials
from registry.auth.middleware import GATE
from registry.auth.tokens import Scope
from registry.errors import TokenRequestInvalid, Unauthorized

log = logging.getLogger("hroot.auth")

LOGIN = Need("login")
CHALLENGE = f'Basic realm="{BASIC_REALM}"'  # what a 401 of the token endpoint asks for


def _gate(request: web.Request) -> Gate:
    gate = request.app.get(GATE)
    if gate is None or gate.htpasswd is None:
        raise web.HTTPNotFound()  # rendered as an OCI error by registry.middleware
    return gate


def _scopes(params: MultiMapping[Any]) -> list[Scope]:
    """Every `scope` parameter; one may hold several, space-separated (OAuth2)."""
    scopes = []
    for value in map(str, params.getall("scope", [])):
        for text in value.split():
            try:
                scopes.append(Scope.parse(text))
            except ValueError as e:
                raise TokenRequestInvalid(str(e), message="malformed scope") from None
    return scopes


async def get_token(request: web.Request) -> web.Response:
    """GET: Basic credentials in the Authorization header, or none for an anonymous token."""
    gate = _gate(request)
    caller = Caller(None)
    if "Authorization" in request.headers:
        scheme, _, value = request.headers["Authorization"].partition(" ")
        credentials = basic_credentials(value) if scheme.lower() == "basic" else None
        if credentials is None:
            raise Unauthorized(CHALLENGE, message="send Basic credentials, or none")
        caller = await _log_in(gate, request, *credentials)
    return _token_response(gate, request, caller, request.query, oauth=False)


async def post_token(request: web.Request) -> web.Response:
    """POST: the OAuth2 password grant, as a form."""
    gate = _gate(request)
    form = await request.post()
    if form.get("grant_type") != "password":
        raise TokenRequestInvalid(
            f"grant_type {form.get('grant_type')!r}", message="only the password grant is offered"
        )
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    caller = await _log_in(gate, request, user, password)
    return _token_response(gate, request, caller, form, oauth=True)


async def _log_in(gate: Gate, request: web.Request, user: str, password: str) -> Caller:
    try:
        return await gate.log_in(request, LOGIN, user, password)
    except Unauthorized as e:  # ask for Basic credentials again, not for a token
        e.challenge = CHALLENGE
        raise


def _token_response(
    gate: Gate, request: web.Request, caller: Caller, params: MultiMapping[Any], oauth: bool
) -> web.Response:
    """A token for `caller` with what it may have of the scopes in `params`."""
    asked = _scopes(params)
    service = params.get("service")
    if service not in (None, gate.tokens.service):
        raise TokenRequestInvalid(
            f"service {service!r}", message=f"this is {gate.tokens.service!r}"
        )
    granted = gate.grant(caller.user, asked)
    token, lifetime = gate.tokens.issue(caller.user, granted)
    if caller.user is not None:
        log.info(
            "login: %s from %s, granted %s",
            caller,
            request.remote,
            " ".join(map(str, granted)) or "no scope",
        )
    issued = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="seconds")
    body: dict[str, object] = {"access_token": token, "expires_in": lifetime, "issued_at": issued}
    if oauth:
        body["scope"] = " ".join(map(str, granted))
    else:
        body["token"] = token
    return web.json_response(body, headers={"Cache-Control": "no-store"})
