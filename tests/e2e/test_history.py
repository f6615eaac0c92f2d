"""`hroot log/show/diff/ls` on images docker pushed: a base image and one built FROM it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Hroot, Pushed

pytestmark = pytest.mark.e2e


def as_json(server: Hroot, *args: str) -> Any:
    return json.loads(server.cli(*args, "--json"))


def test_log_names_the_base_image(hroot: Hroot, base: Pushed, built: Pushed) -> None:
    out = hroot.cli("log", "built")
    assert f"built from base@{base.digest}" in out
    assert f"image {built.digest}  linux/" in out
    entries = as_json(hroot, "log", "built")
    (pushed,) = [e for e in entries if e["image"] and e["image"]["digest"] == built.digest]
    assert pushed["bases"] == [{"repository": "base", "digest": base.digest, "platform": None}]
    assert pushed["commit"] in hroot.git("log", "--first-parent", "--format=%H", "hroot/built")


def test_show_lists_three_layers_and_the_one_shared_with_base(
    hroot: Hroot, base: Pushed, built: Pushed
) -> None:
    image = as_json(hroot, "show", "built:1")
    base_layers = [layer["digest"] for layer in as_json(hroot, "show", "base:1")["layers"]]
    assert image["digest"] == built.digest and len(image["layers"]) == 3
    # other tests of the session push these layers elsewhere too (the list in `multi`)
    shared_with = [layer["shared_with"] for layer in image["layers"]]
    assert "base" in shared_with[0] and not {"base"} & {*shared_with[1], *shared_with[2]}
    assert image["layers"][0]["digest"] == base_layers[0]
    for layer in image["layers"]:  # docker pushes gzip layers: a tar is larger
        assert layer["uncompressed_size"] > layer["size"]

    out = hroot.cli("show", "built:1")
    layer_lines = [line for line in out.splitlines() if line.lstrip()[:2] in ("1 ", "2 ", "3 ")]
    assert len(layer_lines) == 3
    also_in = [line.split("  ")[-1].split(", ") for line in layer_lines]
    assert base_layers[0] in layer_lines[0] and "base" in also_in[0]
    assert not any("base" in names for names in also_in[1:])
    assert f"built from     base@{base.digest}" in out


def test_diff_of_base_and_built_adds_two_layers_and_keeps_one(
    hroot: Hroot, base: Pushed, built: Pushed
) -> None:
    found = as_json(hroot, "diff", "base:1", "built:1")
    assert len(found["layers"]["added"]) == 2 and found["layers"]["removed"] == []
    (kept,) = found["layers"]["kept"]
    assert kept["digest"] == as_json(hroot, "show", "base:1")["layers"][0]["digest"]
    old_size, new_size = (as_json(hroot, "show", ref)["size"] for ref in ("base:1", "built:1"))
    assert found["size"] == {"old": old_size, "new": new_size, "change": new_size - old_size}

    out = hroot.cli("diff", "base:1", "built:1")
    assert f"  kept     {kept['digest']}" in out
    assert sum(line.startswith("  added    sha256:") for line in out.splitlines()) == 2


def test_ls_lists_both_with_unique_and_shared_bytes(
    hroot: Hroot, base: Pushed, built: Pushed
) -> None:
    usage = {repo["repository"]: repo for repo in as_json(hroot, "ls")["repositories"]}
    shared_layer = as_json(hroot, "show", "base:1")["layers"][0]
    assert usage["base"]["shared"] >= shared_layer["size"]
    assert usage["built"]["shared"] >= shared_layer["size"]
    for name in ("base", "built"):
        assert usage[name]["unique"] + usage[name]["shared"] == usage[name]["size"] > 0
    rows = [line.split()[0] for line in hroot.cli("ls").splitlines()[1:] if line.strip()]
    assert "base" in rows and "built" in rows
