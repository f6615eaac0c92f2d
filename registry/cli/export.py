"""`hroot export`: one image as an OCI archive or a `docker load` archive.

Blobs stream from the repository into the tar; a file is written beside its final
name and renamed into place at the end, so a failed export leaves no half archive.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO

from registry.cli.common import (
    add_data_option,
    add_json_option,
    fail,
    opened,
    print_json,
)
from registry.cli.progress import progress_bar
from storage import Store, archives


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write an image as an OCI archive or a docker load archive",
        description="Write image NAME:TAG as an OCI archive (`skopeo copy oci-archive:FILE …`, "
        "`podman load`) or a docker archive (`docker load -i FILE`).",
    )
    parser.add_argument("image", metavar="NAME[:TAG]", help="the image (tag latest if none)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", required=True, help="archive to write; - for stdout"
    )
    parser.add_argument(
        "--format",
        choices=archives.FORMATS,
        default=archives.FORMATS[0],
        help="oci-archive (default) or docker-archive",
    )
    parser.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="the image of a multi-platform index to export; a docker archive holds one, "
        f"by default this machine's ({archives.machine_platform()})",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    name, tag = archives.split_reference(args.image)
    to_stdout = args.output == "-"
    if to_stdout and args.json:
        fail("--json prints to stdout, which -o - fills with the archive", status=2)
    if to_stdout and sys.stdout.isatty():
        fail("not writing an archive to a terminal: redirect stdout or give -o FILE", status=2)
    with opened(args, args.output) as store:
        if to_stdout:
            image = _export(store, args, name, tag or "latest", sys.stdout.buffer)
        else:
            image = _export_to_file(store, args, name, tag or "latest", Path(args.output))
    if args.json:
        print_json({**asdict(image), "format": args.format, "file": args.output})
    elif not to_stdout:
        print(f"exported {image.name}:{image.tag} {image.digest} to {args.output}")
    return 0


def _export_to_file(
    store: Store, args: argparse.Namespace, name: str, tag: str, path: Path
) -> archives.Image:
    """Write beside `path`, then rename: the archive appears whole or not at all."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with partial.open("xb") as out:
            image = _export(store, args, name, tag, out)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    return image


def _export(
    store: Store, args: argparse.Namespace, name: str, tag: str, out: IO[bytes]
) -> archives.Image:
    with progress_bar("export") as progress:
        return archives.export_image(store, name, tag, out, args.format, args.platform, progress)
