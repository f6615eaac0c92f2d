"""The upstream registries a pull-through proxy fronts (README "Pull-through proxy"):
`[[upstream]]` tables of the config, or `hroot serve --proxy URL`.

Names under an upstream's `prefix` are that upstream's: `docker.io/alpine` with prefix
`docker.io` is `alpine` there, which Docker Hub calls `library/alpine`. An empty prefix
takes every name: hroot is then a cache of that one upstream, as Distribution's proxy
mode is. Such names are read-only here; every other name is local and never goes
upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from registry.tables import tables

DEFAULT_TTL = 300.0  # seconds a tag is served before upstream is asked again
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB = "https://registry-1.docker.io"


@dataclass(frozen=True)
class Upstream:
    url: str  # scheme://host[:port], no path
    prefix: str = ""  # "" takes every name
    username: str | None = None
    password: str | None = None
    ttl: float = DEFAULT_TTL

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def docker_hub(self) -> bool:
        return self.host in DOCKER_HUB_HOSTS

    def covers(self, name: str) -> bool:
        """Whether the local repository `name` is this upstream's."""
        return not self.prefix or name.startswith(self.prefix + "/")

    def remote(self, name: str) -> str:
        """The upstream's name for local `name` (which it covers): without the prefix, and
        with Docker Hub's `library/` for its official images."""
        remote = name[len(self.prefix) + 1 :] if self.prefix else name
        if self.docker_hub and "/" not in remote:
            remote = "library/" + remote
        return remote

    def __str__(self) -> str:
        return self.url


def parse_url(value: Any) -> str:
    """An upstream URL as `scheme://host[:port]`; `docker.io` for Docker Hub."""
    if not isinstance(value, str) or not value:
        raise ValueError("url must be a non-empty string")
    if value in DOCKER_HUB_HOSTS:
        return DOCKER_HUB
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"url {value!r} is not http(s)://HOST[:PORT]")
    if parts.username or parts.password:
        raise ValueError(f"url {value!r}: give credentials as username and password")
    url = f"{parts.scheme}://{parts.netloc}"
    return DOCKER_HUB if parts.netloc in DOCKER_HUB_HOSTS else url


def parse_upstreams(value: Any) -> tuple[Upstream, ...]:
    """`[[upstream]]` tables: url, and optionally prefix, username, password or
    password_file, ttl (seconds)."""
    upstreams = []
    for where, table in tables(
        value,
        "upstream",
        "upstream",
        {"url", "prefix", "username", "password", "password_file", "ttl"},
    ):
        try:
            url = parse_url(table.get("url"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        prefix = table.get("prefix", "")
        if not isinstance(prefix, str) or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"{where}: prefix must be a name without a leading or trailing /")
        password = table.get("password")
        if "password_file" in table:
            if password is not None:
                raise ValueError(f"{where}: password or password_file, not both")
            try:
                password = Path(table["password_file"]).read_text().strip()
            except (OSError, TypeError) as e:
                raise ValueError(f"{where}: password_file: {e}") from None
        username = table.get("username")
        if (username is None) != (password is None):
            raise ValueError(f"{where}: username and password go together")
        if not all(isinstance(v, str | None) for v in (username, password)):
            raise ValueError(f"{where}: username and password must be strings")
        ttl = table.get("ttl", DEFAULT_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            raise ValueError(f"{where}: ttl must be a number of seconds, 0 or more")
        upstreams.append(Upstream(url, prefix, username, password, float(ttl)))
    prefixes = [u.prefix for u in upstreams]
    if len(set(prefixes)) != len(prefixes) or ("" in prefixes and len(prefixes) > 1):
        raise ValueError("each upstream needs its own prefix; an empty one only alone")
    return tuple(upstreams)


def upstream_of(upstreams: tuple[Upstream, ...], name: str) -> Upstream | None:
    """The upstream whose names `name` is one of (the longest prefix wins); None for a
    local name."""
    covering = [u for u in upstreams if u.covers(name)]
    return max(covering, key=lambda u: len(u.prefix)) if covering else None
