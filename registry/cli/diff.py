"""`hroot diff NAME:A NAME:B`: how one image differs from another."""

from __future__ import annotations

import argparse

from registry.cli.common import add_data_option, add_json_option, print_json
from registry.cli.display import image_reference, jsonable, reading
from registry.formats import config_lines, signed_size, size
from storage.fsdiff import FileChange
from storage.history import ImageDiff, ImageName, LayerSize


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "diff",
        help="compare two images: layers, config, size, files",
        description="How image NEW differs from image OLD (of the same repository or two): "
        "layers added, removed and kept, config fields changed, and the change in size; when "
        "both have a filesystem view (`hroot fs build`), the files added, removed and "
        "changed, with sizes and changes of mode and owner.",
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
    if found.files is not None:
        print("\nfiles")
        for change in found.files or []:
            print(f"  {_file_line(change)}")
        if not found.files:
            print("  unchanged")


def _file_line(change: FileChange) -> str:
    """`added    /etc/x  file  12 B`, or for a change what changed: size, mode, owner."""
    said = [change.kind]
    if change.change == "added":
        said.append(_size(change.new_size) + f"  {change.new_mode} {change.new_owner}")
    elif change.change == "removed":
        said.append(_size(change.old_size))
    else:
        if change.old_size != change.new_size:
            said.append(f"{_size(change.old_size)} -> {_size(change.new_size)}")
        elif change.new_size is not None:
            said.append(_size(change.new_size))
        if change.old_mode != change.new_mode:
            said.append(f"mode {change.old_mode} -> {change.new_mode}")
        if change.old_owner != change.new_owner:
            said.append(f"owner {change.old_owner} -> {change.new_owner}")
    return f"{change.change:<8} {change.path}  " + "  ".join(s for s in said if s)


def _size(value: int | None) -> str:
    return size(value) if value is not None else ""


def _name(image: ImageName) -> str:
    if image.reference == image.digest:
        return f"{image.repository}@{image.digest}"
    return f"{image.repository}:{image.reference}  {image.digest}"


def _layers(what: str, layers: list[LayerSize]) -> None:
    for layer in layers:
        print(f"  {what:<8} {layer.digest}  {size(layer.size):>9}")
