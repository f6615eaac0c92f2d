"""`hroot serve`: run the registry until SIGINT or SIGTERM.

Everything that can be refused is checked before anything is created on disk: the
flags and the config (a --follow source included), the TLS certificate and key, the
repository path (storage.repository.check), then the listening socket is bound; only then
is a new repository created or an old one adopted.
"""

from __future__ import annotations

import argparse
import logging
import socket
import ssl

from registry import follow, server
from registry.app import create_app
from registry.auth import middleware as auth
from registry.cli.common import add_data_option
from registry.cli.gc import add_retention_options
from registry.config import LOG_FORMATS, LOG_LEVELS, Config, ConfigError, load_config
from registry.logs import setup_logging
from storage import StoreError, repository

log = logging.getLogger("hroot.registry")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = Config()
    serve = subparsers.add_parser(
        "serve",
        help="run the registry",
        description="Serve the OCI distribution API (v1.1) over HTTP, or HTTPS with "
        "--tls-cert; every push becomes a commit on branch hroot/<name> of one bare git "
        "repository, created if missing. "
        "Settings apply in this order, later ones winning: defaults, --config file, "
        "HROOT_LISTEN/HROOT_DATA, flags.",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to listen on, [::1]:PORT for IPv6 (env HROOT_LISTEN; "
        f"default {defaults.listen})",
    )
    add_data_option(serve)
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help=f"least severe log messages shown; info logs one line per request "
        f"(default {defaults.log_level})",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=f"plain lines, or one JSON object a line for log collectors "
        f"(default {defaults.log_format})",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="also serve /metrics, /health and /ready on this address, apart from the API",
    )
    serve.add_argument(
        "--follow",
        metavar="URL",
        help="be a read-only follower of this primary: its git endpoint "
        "(http://HOST:PORT/git/) or the path of its repository. Its repositories become "
        "the primary's (branches the primary lacks are deleted); it serves pulls from the "
        "start, fetches in the background, and refuses pushes and deletes",
    )
    serve.add_argument(
        "--follow-interval",
        metavar="SECONDS",
        type=float,
        help=f"seconds between two fetches from --follow (default {defaults.follow_interval:g})",
    )
    serve.add_argument(
        "--gc-interval",
        metavar="SECONDS",
        type=float,
        help=f"seconds between two runs of `hroot gc` inside the server, 0 for none "
        f"(default {defaults.gc_interval:g})",
    )
    serve.add_argument(
        "--gc-expiry",
        metavar="SECONDS",
        type=float,
        help=f"what gc leaves: anything younger (default {defaults.gc_expiry:g})",
    )
    add_retention_options(serve, prefix="gc-")
    serve.add_argument(
        "--proxy",
        metavar="URL",
        help="be a pull-through cache of the registry at URL (docker.io for Docker Hub): "
        "pulls of what is not stored yet go there and become commits, pushes are refused; "
        "several upstreams, credentials and TTLs: [[upstream]] in the config "
        "(README: Pull-through proxy)",
    )
    serve.add_argument(
        "--fs-view",
        metavar="PATTERN",
        action="append",
        help="keep a filesystem view in git (refs/hroot/fs/NAME: each tag's files, for "
        "`git diff` and `git log -- PATH`) of repositories whose names match PATTERN "
        "(`*` for all); built in the background after each push; repeatable",
    )
    security = serve.add_argument_group("security (README: Security; more in the config file)")
    security.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this certificate chain (PEM); needs --tls-key",
    )
    security.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    security.add_argument(
        "--htpasswd",
        metavar="FILE",
        help="turn authentication on for every endpoint: users of this htpasswd file "
        "(bcrypt entries, as `htpasswd -B` writes them), re-read when it changes",
    )
    security.add_argument(
        "--anonymous-pull",
        metavar="PATTERN",
        action="append",
        help="let anyone pull repositories whose names match PATTERN (`*` for all) "
        "without credentials; repeatable",
    )
    return serve


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.config,
            listen=args.listen,
            data=args.data,
            log_level=args.log_level,
            log_format=args.log_format,
            metrics_listen=args.metrics_listen,
            follow=args.follow,
            follow_interval=args.follow_interval,
            gc_interval=args.gc_interval,
            gc_expiry=args.gc_expiry,
            gc_drop_untagged_days=args.gc_drop_untagged,
            gc_keep_commits=args.gc_keep_commits,
            gc_keep_days=args.gc_keep_days,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            htpasswd=args.htpasswd,
            anonymous_pull=args.anonymous_pull,
            upstream=[{"url": args.proxy}] if args.proxy else None,
            fs_view=args.fs_view,
        )
        if config.follow is not None:
            follow.check_source(config.follow, config.data)
        auth.check_files(config)
    except ConfigError as e:
        args.parser.exit(2, f"hroot: {e}\n")
    setup_logging(config.log_level, config.log_format)
    ssl_context: ssl.SSLContext | None = None
    if config.tls_cert is not None and config.tls_key is not None:
        try:
            ssl_context = server.tls_context(config.tls_cert, config.tls_key)
        except server.TLSFilesInvalid as e:
            log.error("cannot serve HTTPS: %s", e)
            return 1
    try:
        repository.check(config.data)
    except StoreError as e:
        log.error("%s", repository.describe(e))
        return 1
    try:
        sock = _bind(config)
    except OSError as e:
        log.error("cannot listen on %s: %s", config.listen, e)
        return 1
    try:
        app = create_app(config)
    except (StoreError, OSError, ConfigError) as e:
        sock.close()
        log.error("cannot open the registry at %s: %s", config.data, repository.describe(e))
        return 1
    server.serve(app, sock, ssl_context, config)
    return 0


def _bind(config: Config) -> socket.socket:
    """The listening socket, bound before the repository is touched (a port in use
    must leave no new repository behind)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
