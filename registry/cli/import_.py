"""`hroot import`: images from a `docker save` or OCI archive, or an OCI layout folder.

Each image becomes commits exactly as a push would make them (storage.archives), in
the repository itself: no server needed, and a running one is no obstacle.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from registry.cli.common import (
    add_data_option,
    add_json_option,
    opened,
    print_json,
)
from registry.cli.progress import progress_bar
from storage import archives


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import",
        help="import images from a docker save or OCI archive, or an OCI layout",
        description="Import every image of a `docker save` archive, an OCI archive "
        "(`skopeo copy … oci-archive:FILE`) or an OCI layout folder, as pushes would: "
        "a commit per manifest on branch hroot/<name>. Names come from the archive "
        "(docker's RepoTags, the layout's annotations) unless --name gives them.",
    )
    parser.add_argument("source", metavar="FILE-or-DIR", type=Path, help="archive or layout")
    parser.add_argument(
        "--name",
        metavar="NAME[:TAG]",
        help="repository (and tag, for an archive of one image) to import into; "
        "without a tag each image keeps the tags the archive gives it",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with opened(args, args.source, create=True) as store, progress_bar("import") as progress:
        imported = archives.import_images(store, args.source, args.name, progress)
    if args.json:
        print_json([asdict(image) for image in imported])
    else:
        for image in imported:
            print(f"imported {image.name}:{image.tag} {image.digest}")
    return 0
