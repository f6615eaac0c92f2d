"""`hroot show NAME:TAG`: one image in detail: its config, layers and base."""

from __future__ import annotations

import argparse

from registry.cli.common import add_data_option, add_json_option, print_json
from registry.cli.display import image_reference, jsonable, reading
from registry.formats import size, value, when
from storage.history import ConfigSummary, Image


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "show",
        help="show one image: config, layers, base",
        description="One image of the registry: its digest, media type and size; how it runs "
        "(entrypoint, cmd, env, user, working dir, labels, platform); each layer with its "
        "compressed and uncompressed size and the other repositories that hold it; the image "
        "it was built FROM. For a multi-platform index, its platforms.",
    )
    parser.add_argument("image", metavar="NAME:TAG|NAME@DIGEST", help="the image")
    parser.add_argument(
        "--platform", metavar="OS/ARCH[/VARIANT]", help="of an index, show this platform's image"
    )
    add_data_option(parser)
    add_json_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    with reading(args) as store:
        image = store.image(*image_reference(args.image), platform=args.platform)
        if args.json:
            print_json(jsonable(image))
        else:
            _print(args.image, image)
    return 0


def _print(asked: str, image: Image) -> None:
    print(asked)
    _field("digest", image.digest)
    _field("media type", image.media_type)
    if image.children:
        what = f"{len(image.children)} images"
    else:
        what = f"config and {len(image.layers)} layers"
    _field("size", f"{size(image.size)} ({what}; manifest {size(image.manifest_size)})")
    _field("platform", ", ".join(image.platforms) or "-")
    _field("tags", ", ".join(image.tags) or "-")
    if image.pushed is not None:
        _field("pushed", f"{when(image.pushed.time)} in commit {image.pushed.commit[:12]}")
    for base in image.bases:
        where = f" ({base.platform})" if base.platform else ""
        _field("built from", f"{base.repository}@{base.digest}{where}")
    if image.config is not None:
        print(f"\nconfig {image.config_digest}")
        _print_config(image.config)
    if image.layers:
        print("\nlayers (compressed, uncompressed, also in)")
        for number, layer in enumerate(image.layers, 1):
            shared = ", ".join(layer.shared_with) or "-"
            print(
                f"  {number:>2}  {layer.digest}  {size(layer.size):>9}  "
                f"{size(layer.uncompressed_size):>9}  {shared}"
            )
    if image.children:
        print("\nplatforms")
        for child in image.children:
            print(f"  {child.platform or '-':<16}  {child.digest}  {size(child.size):>9}")


def _print_config(config: ConfigSummary) -> None:
    _field("created", config.created or "-", indent=2)
    _field("entrypoint", value(config.entrypoint), indent=2)
    _field("cmd", value(config.cmd), indent=2)
    _field("user", value(config.user), indent=2)
    _field("working dir", value(config.working_dir), indent=2)
    _field("ports", ", ".join(config.exposed_ports) or "-", indent=2)
    _lines("env", config.env)
    _lines("labels", [f"{key}={text}" for key, text in sorted(config.labels.items())])


def _field(name: str, text: str, indent: int = 0) -> None:
    print(f"{' ' * indent}{name:<{15 - indent}}{text}")


def _lines(name: str, items: list[str]) -> None:
    """A field of many values, one a line."""
    _field(name, items[0] if items else "-", indent=2)
    for item in items[1:]:
        _field("", item, indent=2)
