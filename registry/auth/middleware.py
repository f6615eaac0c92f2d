"""Authentication and authorization of every request, before its handler runs.

Off unless the config names an htpasswd file or a trusted token issuer. Then each route
needs something (registry.auth.gate.Need): GET /v2/ a logged-in caller; the catalog and
the web pages (/ui/) a caller who may pull something (they show only what the caller
may pull); /metrics, /health, /ready and the token endpoint nothing; reads of a
repository `pull`, every step of an upload and manifest PUTs `push`, DELETEs of manifests and blobs
`delete`; git over HTTP `pull` on every repository, since its packs hold objects of all
of them. A refused request is answered before its handler runs, so it writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.auth.gate import ANONYMOUS, UI_PATH, Caller, Gate, Need
from registry.auth.htpasswd import Htpasswd
from registry.auth.tokens import load_or_make_key, load_public_key
from registry.config import Config, ConfigError

GATE = web.AppKey("gate", Gate)
CALLER = "hroot.caller"  # request key: the Caller of an authenticated request


def setup(app: web.Application, config: Config, repository: Path) -> None:
    """Turn authentication on for `app` if `config` asks for it."""
    if config.authenticates:
        try:
            app[GATE] = Gate(config, repository)
        except (OSError, ValueError) as e:  # a file named in the config, unreadable or bad
            raise ConfigError(f"authentication: {e}") from e


def check_files(config: Config) -> None:
    """Refuse, before anything is created, an htpasswd file or a key in the config that
    cannot be read or used."""
    try:
        if config.htpasswd is not None:
            Htpasswd(config.htpasswd)
        if config.trusted_issuer_key is not None:
            load_public_key(config.trusted_issuer_key)
        if config.token_key is not None and config.token_key.exists():
            load_or_make_key(config.token_key)
    except (OSError, ValueError) as e:
        raise ConfigError(f"authentication: {e}") from e


def need_of(request: web.Request) -> Need | None:
    """What `request` needs, by its route; None for what anyone may reach (the token
    endpoint, unknown paths that answer 404)."""
    route = request.match_info.route
    path = route.resource.canonical if route.resource is not None else ""
    if path.startswith("/git/"):
        return Need("everything", action="pull")
    if path.startswith(UI_PATH):  # its pages show only what the caller may pull
        return Need("browse")
    if not path.startswith("/v2"):  # the token endpoint, /metrics, /health, /ready, 404s
        return None
    name = request.match_info.get("name")
    if name is None:
        return Need("catalog") if path == "/v2/_catalog" else Need("login")
    if "/blobs/uploads/" in path:  # every step of an upload session, its GET included
        action = "push"
    elif request.method in ("GET", "HEAD"):
        action = "pull"
    elif request.method == "DELETE":
        action = "delete"
    else:
        action = "push"
    return Need("repository", name, action)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    gate = request.app.get(GATE)
    need = need_of(request) if gate is not None else None
    if gate is None or need is None:
        return await handler(request)
    request[CALLER] = caller = await gate.identify(request, need)
    gate.authorize(request, caller, need)
    return await handler(request)


def caller_of(request: web.Request) -> Caller:
    return request.get(CALLER, ANONYMOUS)


def may(request: web.Request, action: str, name: str) -> bool:
    """Whether the caller of `request` may `action` repository `name` (always, without auth):
    for what a handler does beyond its route's need, such as a mount's source."""
    gate = request.app.get(GATE)
    return gate is None or gate.allows(caller_of(request), action, name)


def shown(request: web.Request, name: str) -> bool:
    """Whether listings show repository `name` to the caller of `request`: whether the rules
    let its user pull it (a token's grants name single repositories, not listings)."""
    gate = request.app.get(GATE)
    return gate is None or gate.rules.allows(caller_of(request).user, "pull", name)
