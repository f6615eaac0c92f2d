"""Server configuration: defaults that serve at once, then a TOML file, the environment, flags."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from registry.access import Grant, parse_grants, parse_groups, parse_patterns
from registry.access import Rules as AccessRules
from registry.upstreams import Upstream, parse_upstreams
from registry.webhooks import Webhook, parse_webhooks
from storage.retention import Rules

MiB = 1 << 20
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
AUTH_CHALLENGES = ("bearer", "basic")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the source."""


@dataclass(frozen=True)
class Config:
    """Everything the server can be told. Field names are also the TOML keys."""

    host: str = "127.0.0.1"
    port: int = 5000
    data: Path = Path("hroot.git")
    log_level: str = "info"
    max_manifest_size: int = 4 * MiB
    # Upper bound of `n` for tags/list and _catalog; larger requests get this many plus a Link.
    max_page_size: int = 10_000
    # Threads for the blocking work of GET/HEAD requests, and of every other request
    # (registry.pools); one repository's writes take at most half of the write threads.
    read_threads: int = 8
    write_threads: int = 8
    # Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    shutdown_timeout: float = 10.0
    # The primary a read-only follower keeps in step with: a `http://…/git/` URL or a path
    # (registry.follow); None serves as a primary, taking pushes.
    follow: str | None = None
    # Seconds between two fetches from `follow`.
    follow_interval: float = 5.0
    # Bytes a write must leave free on the repository's filesystem: a request whose
    # Content-Length would leave less is refused with 507 before its body is read, keeping
    # room for the commits, refs and `git gc` packs that a push and its upkeep still need.
    min_free_bytes: int = 64 * MiB
    # Seconds between two runs of gc inside the server (registry.housekeeping); 0: never.
    gc_interval: float = 86_400.0
    # What gc leaves: upload spools, tmp files, staging refs and unreachable objects younger
    # than this many seconds (storage.gc).
    gc_expiry: float = 86_400.0
    # Retention in that gc (storage.retention), each off unless set: drop untagged manifests
    # untagged for longer than this many days; keep at least this many commits, or days,
    # of each repository's history, cutting off what is older.
    gc_drop_untagged_days: float | None = None
    gc_keep_commits: int | None = None
    gc_keep_days: float | None = None

    # --- Security (README "Security"); each limit answers with an OCI JSON error ---
    # Serve HTTPS with this certificate chain and its key (PEM files); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Longest request line or header field in bytes, and most header fields per request.
    max_header_size: int = 16 * 1024
    max_headers: int = 100
    # Seconds a request body may go without sending a byte before the request fails.
    body_timeout: float = 60.0
    # Seconds an upload session lives after it was opened; after that it is unknown.
    upload_lifetime: float = 86_400.0
    # Upload sessions one client address may have open at once.
    max_uploads_per_client: int = 1000
    # Authentication (registry.auth): users of this htpasswd file (bcrypt entries, re-read
    # when it changes); None with no trusted_issuer_key: no authentication at all.
    htpasswd: Path | None = None
    # How clients are asked for credentials: "bearer" (Docker's token flow, with tokens
    # from hroot's /auth/token or from token_realm) or "basic" (the password on every request).
    auth_challenge: str = "bearer"
    # The private key (PEM) that signs hroot's tokens; None: hroot/token-key.pem in the
    # repository, made on first start.
    token_key: Path | None = None
    # Seconds a token lives; its service (audience) and issuer names.
    token_lifetime: float = 300.0
    token_service: str = "hroot"
    token_issuer: str = "hroot"
    # Where clients get tokens; None: this server's /auth/token.
    token_realm: str | None = None
    # An external token issuer whose tokens are accepted too, as Distribution's
    # auth.token: its `iss` and its public key or certificate (PEM).
    trusted_issuer: str | None = None
    trusted_issuer_key: Path | None = None
    # Authorization (registry.access): name patterns anyone may pull without
    # credentials; groups of users; grants (a table each: users, groups, names, actions).
    # With no grants, every authenticated user may pull, push and delete everything.
    anonymous_pull: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    access: tuple[Grant, ...] = ()
    # Pull-through proxy (registry.proxy): [[upstream]] tables (registry.upstreams).
    upstream: tuple[Upstream, ...] = ()

    # --- Operations (README "Running hroot") ---
    # Log lines as plain text, or one JSON object each ("json") for log collectors.
    log_format: str = "text"
    # Serve /metrics (and /health, /ready) on this HOST:PORT too, apart from the API, as
    # Distribution's debug server; None: on the API's address only.
    metrics_listen: str | None = None
    # /ready fails while a follower's last good fetch is older than this many seconds.
    ready_follow_lag: float = 60.0
    # Notification webhooks (registry.events): [[webhook]] tables (registry.webhooks).
    webhook: tuple[Webhook, ...] = ()
    # Repositories (name patterns as in anonymous_pull, `*` for all) whose tags get a
    # filesystem view in git, refs/hroot/fs/NAME (registry.fsviews); none by default.
    fs_view: tuple[str, ...] = ()

    @property
    def retention(self) -> Rules:
        return Rules(self.gc_drop_untagged_days, self.gc_keep_commits, self.gc_keep_days)

    @property
    def rules(self) -> AccessRules:
        return AccessRules(self.access, self.groups, self.anonymous_pull)

    @property
    def authenticates(self) -> bool:
        """Whether requests need credentials (or a grant to anonymous pulls) at all."""
        return self.htpasswd is not None or self.trusted_issuer_key is not None

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    """Split HOST:PORT (`[::1]:5000` for IPv6); an empty host means all interfaces."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen address {value!r} is not HOST:PORT with a port in 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def _checked(config: Config, source: str) -> Config:
    """Refuse values the server could not run with, naming where they came from."""
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"{source}: log_level must be one of {', '.join(LOG_LEVELS)}")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"{source}: log_format must be one of {', '.join(LOG_FORMATS)}")
    if config.metrics_listen is not None:
        try:
            parse_listen(config.metrics_listen)
        except ConfigError as e:
            raise ConfigError(f"{source}: metrics_listen: {e}") from None
    if not 0 < config.ready_follow_lag < math.inf:
        raise ConfigError(f"{source}: ready_follow_lag must be a positive number of seconds")
    for name in ("max_manifest_size", "max_page_size", "read_threads", "write_threads"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{source}: {name} must be a positive integer")
    if config.min_free_bytes < 0:
        raise ConfigError(f"{source}: min_free_bytes must not be negative")
    if config.shutdown_timeout < 0:
        raise ConfigError(f"{source}: shutdown_timeout must not be negative")
    if not 0 <= config.gc_interval < math.inf or not 0 <= config.gc_expiry < math.inf:
        raise ConfigError(f"{source}: gc_interval and gc_expiry must be seconds, 0 or more")
    for name in ("gc_drop_untagged_days", "gc_keep_days"):
        if not 0 <= (getattr(config, name) or 0) < math.inf:
            raise ConfigError(f"{source}: {name} must be a number of days, 0 or more")
    if config.gc_keep_commits is not None and config.gc_keep_commits < 1:
        raise ConfigError(f"{source}: gc_keep_commits must be a positive integer")
    if config.follow is not None and config.retention.any:
        raise ConfigError(
            f"{source}: a follower keeps its primary's history as fetched: "
            "set retention (gc_drop_untagged_days, gc_keep_commits, gc_keep_days) on the primary"
        )
    for name in ("max_header_size", "max_headers", "max_uploads_per_client"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{source}: {name} must be a positive integer")
    for name in ("body_timeout", "upload_lifetime", "token_lifetime"):
        if not 0 < getattr(config, name) < math.inf:
            raise ConfigError(f"{source}: {name} must be a positive number of seconds")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(f"{source}: tls_cert and tls_key go together: set both or neither")
    if (config.trusted_issuer is None) != (config.trusted_issuer_key is None):
        raise ConfigError(
            f"{source}: trusted_issuer and trusted_issuer_key go together: set both or neither"
        )
    if config.auth_challenge not in AUTH_CHALLENGES:
        raise ConfigError(f"{source}: auth_challenge must be one of {', '.join(AUTH_CHALLENGES)}")
    if config.trusted_issuer is not None and config.trusted_issuer == config.token_issuer:
        raise ConfigError(f"{source}: trusted_issuer must differ from token_issuer (hroot's own)")
    if config.trusted_issuer is not None and config.htpasswd is None and not config.token_realm:
        raise ConfigError(
            f"{source}: with a trusted_issuer and no htpasswd, set token_realm: "
            "where clients get that issuer's tokens"
        )
    if config.auth_challenge == "basic" and config.htpasswd is None:
        raise ConfigError(f'{source}: auth_challenge = "basic" needs an htpasswd file')
    if config.follow is not None and config.upstream:
        raise ConfigError(f"{source}: a follower takes its images from its primary, not upstreams")
    if config.follow == "":
        raise ConfigError(f"{source}: follow must be a URL or a path, not empty")
    if not 0 < config.follow_interval < math.inf:
        raise ConfigError(f"{source}: follow_interval must be a positive number of seconds")
    return config


def _from_mapping(base: Config, values: Mapping[str, Any], source: str) -> Config:
    """Apply `values` (TOML keys, or `listen`) over `base`, checking names and types."""
    annotations = {f.name: str(f.type) for f in fields(Config)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "listen":
            if not isinstance(value, str):
                raise ConfigError(f"{source}: listen must be a string HOST:PORT")
            try:
                changes["host"], changes["port"] = parse_listen(value)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
            continue
        if key not in annotations:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if key in _RULES:
            try:
                changes[key] = _RULES[key](value)
            except ValueError as e:
                raise ConfigError(f"{source}: {key}: {e}") from None
            continue
        default = getattr(Config, key)
        if isinstance(default, Path):
            if not isinstance(value, str | Path):
                raise ConfigError(f"{source}: {key} must be a path string")
            value = Path(value)
        elif default is None:  # optional: "str | None", "int | None" or "float | None"
            value = _optional(value, annotations[key].split(" | ")[0], f"{source}: {key}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"{source}: {key} must be of type {type(default).__name__}")
        changes[key] = value
    return _checked(replace(base, **changes), source)


# Settings with a structure of their own, parsed by registry.access.
_RULES = {
    "anonymous_pull": parse_patterns,
    "fs_view": parse_patterns,
    "groups": parse_groups,
    "access": parse_grants,
    "upstream": parse_upstreams,
    "webhook": parse_webhooks,
}


def _optional(value: Any, kind: str, where: str) -> Any:
    """`value` for an optional setting of type `kind` (an int will do for a float)."""
    accepted = {"str": (str,), "int": (int,), "float": (int, float), "Path": (str, Path)}[kind]
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(f"{where} must be of type {'str' if kind == 'Path' else kind}")
    if kind == "Path":
        return Path(value)
    return float(value) if kind == "float" else value


def load_config(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Config:
    """Defaults, then `config_file` (TOML), then HROOT_LISTEN/HROOT_DATA, then non-None flags."""
    config = Config()
    if config_file is not None:
        try:
            with open(config_file, "rb") as f:
                table = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {config_file}: {e}") from e
        config = _from_mapping(config, table, str(config_file))
    env = os.environ if env is None else env
    from_env = {
        key: env[var]
        for key, var in (("listen", "HROOT_LISTEN"), ("data", "HROOT_DATA"))
        if var in env
    }
    config = _from_mapping(config, from_env, "environment")
    return _from_mapping(config, {k: v for k, v in flags.items() if v is not None}, "command line")
