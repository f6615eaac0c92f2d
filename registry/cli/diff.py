"""`hroot diff NAME:A NAME:B`: how one image differs from another."""

from __future__ import annotations

import argparse

from registry.cli.common import add_data_option, add_json_option, print_json
from registry.cli.display import image_reference, jsonable, reading
from registry.formats import config_lines, signed_size, size
from storage.history import ImageDiff, ImageName, LayerSize


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "diff",
        help="compare two images: layers, config, size",
        description="How image NEW differs from image OLD (of the same repository or two): "
        "layers added, removed and kept, config fields changed, and the change in size.",
    )
    parser.add_argument("old", metavar="OLD", help="NAME:TAG or NAME@DIGEST")
    parser.add_argument("new", metavar="NEW", help="NAME:TAG or NAME@DIGEST")
    parser.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="compare the images of this platform (needed for a multi-platform index)",
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with reading(args) as store:
        old, new = image_reference(args.old), image_reference(args.new)
        found = store.diff(old, new, platform=args.platform)
        if args.json:
            print_json(jsonable(found))
        else:
            _print(found)
    return 0


def _print(found: ImageDiff) -> None:
    """Sections, each under its heading: a later one (files) goes after the others."""
    print(f"old  {_name(found.old)}")
    print(f"new  {_name(found.new)}")
    print("\nlayers")
    _layers("kept", found.layers.kept)
    _layers("removed", found.layers.removed)
    _layers("added", found.layers.added)
    print("\nconfig")
    lines = config_lines(found.config)
    for line in lines or ["unchanged"]:
        print(f"  {line}")
    print("\nsize")
    print(f"  {size(found.size.old)} -> {size(found.size.new)} ({signed_size(found.size.change)})")


def _name(image: ImageName) -> str:
    if image.reference == image.digest:
        return f"{image.repository}@{image.digest}"
    return f"{image.repository}:{image.reference}  {image.digest}"


def _layers(what: str, layers: list[LayerSize]) -> None:
    for layer in layers:
        print(f"  {what:<8} {layer.digest}  {size(layer.size):>9}")
