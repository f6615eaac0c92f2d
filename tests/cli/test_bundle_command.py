"""`hroot bundle create|apply` as real processes: what they print, for people and for
--json, what they write, and how they fail (one line, or the list of problems)."""

from __future__ import annotations

import json
from pathlib import Path

from storage import Store, digests
from tests.cli.test_archive_commands import git, hroot
from tests.storage.images import edit_tip, push_image


def test_create_then_apply_into_a_new_registry(tmp_path: Path) -> None:
    source = tmp_path / "source.git"
    store = Store.open(source)
    app = push_image(store, "library/app", "v1", layer_size=50_000)
    push_image(store, "other", "v1")
    store.close()
    bundle = tmp_path / "app.bundle"

    created = hroot("bundle", "create", bundle, "library/app", "--data", source)
    assert created.returncode == 0, created.stderr
    size = bundle.stat().st_size
    assert created.stdout.decode() == f"wrote {bundle}: 1 repository, {size} bytes\n"
    assert created.stderr == b""  # git's progress only on a terminal

    target = tmp_path / "target.git"  # not there yet: apply creates it
    applied = hroot("bundle", "apply", bundle, "--data", target)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.decode() == "added library/app\n"
    assert git(target, "rev-parse", "hroot/library+app") == git(
        source, "rev-parse", "hroot/library+app"
    )
    copy = Store.open(target)
    assert copy.get_manifest("library/app", "v1").digest == app.digest
    copy.close()

    again = hroot("bundle", "apply", bundle, "--data", target, "--json")
    assert json.loads(again.stdout) == {"added": [], "updated": [], "kept": []}

    later = tmp_path / "n.bundle"
    nothing = hroot("bundle", "create", later, "library/app", "--since", bundle, "--data", source)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.decode() == f"nothing new since {bundle}: {later} not written\n"
    assert not later.exists()

    as_json = hroot("bundle", "create", tmp_path / "all.bundle", "--data", source, "--json")
    assert json.loads(as_json.stdout) == {
        "file": str(tmp_path / "all.bundle"),
        "repositories": ["library/app", "other"],
        "size": (tmp_path / "all.bundle").stat().st_size,
    }


def test_failures_are_one_line_and_a_damaged_bundle_lists_its_problems(tmp_path: Path) -> None:
    source = tmp_path / "source.git"
    store = Store.open(source)
    app = push_image(store, "app", "v1")
    layer = digests.of(app.layers[0])
    path = f"blobs/sha256/{layer.hex}"
    edit_tip(store, "app", {path: b"swapped"})
    store.close()
    bundle = tmp_path / "damaged.bundle"

    unknown = hroot("bundle", "create", bundle, "nope", "--data", source)
    assert (unknown.returncode, unknown.stderr) == (1, b"hroot: no such repository (nope)\n")

    assert hroot("bundle", "create", bundle, "--data", source).returncode == 0
    target = tmp_path / "target.git"
    rejected = hroot("bundle", "apply", bundle, "--data", target)
    assert rejected.returncode == 1
    assert rejected.stderr.decode().splitlines() == [
        f"hroot: {bundle}: the bundle's images are damaged (1 problem(s); no repository changed):",
        f"  hroot/app: {path}: content hashes to {digests.of(b'swapped')}",
    ]
    assert git(target, "for-each-ref") == ""

    missing = hroot("bundle", "apply", tmp_path / "missing.bundle", "--data", target)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("hroot: not a readable bundle (")
    assert len(missing.stderr.splitlines()) == 1
