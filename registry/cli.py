"""The `hroot` command: `hroot serve` runs the registry until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from registry.app import create_app
from registry.config import LOG_LEVELS, Config, ConfigError, load_config
from registry.logs import setup_logging
from storage.errors import StoreError

log = logging.getLogger("hroot.registry")


def _serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = Config()
    serve = subparsers.add_parser(
        "serve",
        help="run the registry",
        description="Serve the OCI distribution API (v1.1) over plain HTTP; every push becomes "
        "a commit on branch hroot/<name> of one bare git repository. Settings apply in this "
        "order, later ones winning: defaults, --config file, HROOT_LISTEN/HROOT_DATA, flags.",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to listen on, [::1]:PORT for IPv6 (env HROOT_LISTEN; "
        f"default {defaults.listen})",
    )
    serve.add_argument(
        "--data",
        metavar="PATH",
        help=f"the bare git repository holding the registry, created if missing "
        f"(env HROOT_DATA; default ./{defaults.data})",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of: listen, data, log_level, max_manifest_size, "
        "max_page_size, shutdown_timeout (default: none needed)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help=f"least severe log messages shown; info logs one line per request "
        f"(default {defaults.log_level})",
    )
    return serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hroot",
        description="hroot: a container registry that keeps every image in git.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = _serve_parser(subparsers)
    parser.epilog = "`hroot serve` takes these options:\n\n" + serve.format_help()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(
            args.config, listen=args.listen, data=args.data, log_level=args.log_level
        )
    except ConfigError as e:
        parser.exit(2, f"hroot: {e}\n")
    setup_logging(config.log_level)
    try:
        app = create_app(config)
    except (StoreError, OSError) as e:
        log.error("cannot open the registry at %s: %s", config.data, e)
        return 1
    try:
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout,
            access_log=None,  # registry.middleware.log_access logs each request
            print=lambda _: log.info(
                "serving %s on http://%s", config.data.resolve(), config.listen
            ),
        )
    except OSError as e:
        log.error("cannot listen on %s: %s", config.listen, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
