"""`hroot fs build` and the files section of `hroot diff`, as real processes."""

from __future__ import annotations

import json
from pathlib import Path

from storage import Store
from tests.cli.commands import hroot
from tests.storage.images import image_config, push_layers, tar_of


def test_fs_build_then_diff_lists_the_files(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    store = Store.open(data)
    push_layers(store, "app", "v1", image_config(), [tar_of({"etc/x": b"1", "etc/y": b"y"})])
    push_layers(store, "app", "v2", image_config(), [tar_of({"etc/x": b"22", "etc/z": b"z"})])
    store.close()

    built = hroot("fs", "build", "app:v1", "--data", data)
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("fs view of app: built v1; removed nothing in ")
    diff = hroot("diff", "app:v1", "app:v2", "--data", data)
    assert "\nfiles\n" not in diff.stdout  # v2 has no view yet

    built = hroot("fs", "build", "app", "--data", data, "--json")
    assert json.loads(built.stdout)["built"] == ["v2"]
    again = hroot("fs", "build", "app", "--data", data)
    assert again.stdout == "fs view of app: up to date (v1, v2)\n"

    diff = hroot("diff", "app:v1", "app:v2", "--data", data)
    files = diff.stdout.split("\nfiles\n", 1)[1].splitlines()
    assert files == [
        "  changed  /etc/x  file  1 B -> 2 B",
        "  removed  /etc/y  file  1 B",
        "  added    /etc/z  file  1 B  0644 0:0",
    ]
    found = json.loads(hroot("diff", "app:v1", "app:v2", "--data", data, "--json").stdout)
    assert [change["path"] for change in found["files"]] == ["/etc/x", "/etc/y", "/etc/z"]


def test_fs_build_of_what_is_not_there_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "hroot.git"
    store = Store.open(data)
    push_layers(store, "app", "v1", image_config(), [tar_of({"a": b"a"})])
    store.close()
    for reference, error in (
        ("nosuch", "hroot: repository name not known to registry (nosuch)"),
        ("app:v9", "hroot: manifest unknown to registry (app:v9)"),
    ):
        done = hroot("fs", "build", reference, "--data", data)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == error + "\n"
