"""Which paths hroot opens: its own, new ones, adopted mirrors, older formats; and which it
refuses without writing a byte there."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from storage import Store
from storage.manifests import OCI_INDEX, OCI_MANIFEST
from storage.repository import FORMAT, RepositoryRefused, check, open_repo
from tests.documents import image_manifest
from tests.storage.images import assert_fsck_clean, git, push_image


def run_git(*args: str | Path, cwd: Path | None = None, input_bytes: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, input=input_bytes, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def snapshot(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under `path` with its mode and bytes: 'unchanged' made exact."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            stat = full.lstat()
            data = full.read_bytes() if full.is_file() and not full.is_symlink() else None
            found[str(full.relative_to(path))] = (stat.st_mode, data)
    return found


def test_a_mirror_clone_is_adopted_and_serves_the_same_images(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = push_image(store, "library/app", "v1")
    mirror = tmp_path / "mirror.git"
    run_git("clone", "--quiet", "--mirror", store.path, mirror)
    assert "hroot.format" not in run_git("--git-dir", mirror, "config", "--list")

    with caplog.at_level(logging.INFO, logger="hroot.storage"):
        adopted = Store.open(mirror, create=False)
    assert "adopted" in caplog.text
    assert run_git("--git-dir", mirror, "config", "hroot.format").strip() == str(FORMAT)
    assert run_git("--git-dir", mirror, "config", "core.bigFileThreshold").strip() == "8388608"
    assert adopted.get_manifest("library/app", "v1").digest == image.digest
    push_image(adopted, "library/app", "v2")
    assert adopted.tags("library/app") == ["v1", "v2"]
    assert_fsck_clean(adopted)


def test_adoption_keeps_settings_the_owner_chose(tmp_path: Path, store: Store) -> None:
    push_image(store, "app", "v1")
    mirror = tmp_path / "mirror.git"
    run_git("clone", "--quiet", "--mirror", store.path, mirror)
    run_git("--git-dir", mirror, "config", "pack.compression", "9")
    Store.open(mirror, create=False).close()
    assert run_git("--git-dir", mirror, "config", "pack.compression").strip() == "9"


def test_refs_fetched_into_an_empty_bare_repository_make_it_a_registry(
    store: Store, tmp_path: Path
) -> None:
    image = push_image(store, "app", "v1")
    fetched = tmp_path / "fetched.git"
    run_git("init", "--quiet", "--bare", fetched)
    run_git(
        "--git-dir",
        fetched,
        "fetch",
        "--quiet",
        store.path,
        "refs/heads/hroot/*:refs/heads/hroot/*",
    )
    assert Store.open(fetched).get_manifest("app", "v1").digest == image.digest


def _plain_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def _work_tree(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    run_git("init", "--quiet", work)
    (work / "README").write_text("mine\n")
    run_git("-C", work, "add", "README")
    run_git("-C", work, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "first")
    return work


def _dot_git(tmp_path: Path) -> Path:
    return _work_tree(tmp_path) / ".git"


def _bare_without_hroot_branches(tmp_path: Path) -> Path:
    work = _work_tree(tmp_path)
    bare = tmp_path / "code.git"
    run_git("clone", "--quiet", "--bare", work, bare)
    return bare


def _newer_format(tmp_path: Path) -> Path:
    newer = tmp_path / "newer.git"
    Store.open(newer).close()
    run_git("--git-dir", newer, "config", "hroot.format", str(FORMAT + 1))
    return newer


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "registry"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_plain_folder, "not empty and not a git repository"),
        (_work_tree, "work tree of a git repository"),
        (_dot_git, "non-bare"),
        (_bare_without_hroot_branches, "no hroot/ branches"),
        (_newer_format, "newer than this hroot"),
        (_a_file, "is a file"),
    ],
)
def test_paths_that_are_not_hroots_are_refused_untouched(
    tmp_path: Path, make: object, says: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    before = snapshot(tmp_path)
    with pytest.raises(RepositoryRefused, match=says) as refused:
        check(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert "\n" not in str(refused.value)
    for create in (True, False):
        with pytest.raises(RepositoryRefused):
            Store.open(path, create=create)
    assert snapshot(tmp_path) == before


def test_a_missing_path_is_not_created_when_creation_is_off(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_repo(tmp_path / "nothing.git", create=False)
    assert not (tmp_path / "nothing.git").exists()


def test_an_empty_folder_becomes_a_registry(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    store = Store.open(empty)
    push_image(store, "app", "v1")
    assert run_git("--git-dir", empty, "config", "hroot.format").strip() == str(FORMAT)


def _git_object(gitdir: Path, kind: str, data: bytes) -> str:
    return run_git(
        "--git-dir", gitdir, "hash-object", "-w", "-t", kind, "--stdin", input_bytes=data
    ).strip()


def _format_1_repository(path: Path) -> tuple[str, bytes]:
    """A registry as format 1 wrote it, by hand with git: index.json on one line.

    Returns the image's manifest digest and its config.
    """
    run_git("init", "--quiet", "--bare", path)
    for key, value in (
        ("hroot.format", "1"),
        ("core.bigFileThreshold", "8388608"),
        ("pack.compression", "0"),
    ):
        run_git("--git-dir", path, "config", key, value)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(512)
    manifest = image_manifest(config, [layer])
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs = {hashlib.sha256(b).hexdigest(): _git_object(path, "blob", b) for b in (config, layer)}
    blobs[digest[7:]] = _git_object(path, "blob", manifest)
    sha256 = "".join(f"100644 blob {oid}\t{hex_}\n" for hex_, oid in sorted(blobs.items()))
    sha256_tree = run_git("--git-dir", path, "mktree", input_bytes=sha256.encode()).strip()
    blobs_tree = run_git(
        "--git-dir", path, "mktree", input_bytes=f"040000 tree {sha256_tree}\tsha256\n".encode()
    ).strip()
    descriptor = {
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
        "digest": digest,
        "mediaType": OCI_MANIFEST,
        "size": len(manifest),
    }
    index = json.dumps(
        {"manifests": [descriptor], "mediaType": OCI_INDEX, "schemaVersion": 2},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    layout = _git_object(path, "blob", b'{"imageLayoutVersion":"1.0.0"}')
    root = (
        f"040000 tree {blobs_tree}\tblobs\n"
        f"100644 blob {_git_object(path, 'blob', index)}\tindex.json\n"
        f"100644 blob {layout}\toci-layout\n"
    )
    tree = run_git("--git-dir", path, "mktree", input_bytes=root.encode()).strip()
    commit = run_git(
        "--git-dir",
        path,
        "-c",
        "user.name=hroot",
        "-c",
        "user.email=hroot@localhost",
        "commit-tree",
        tree,
        "-m",
        f"push app:v1 {digest}\n\nManifest-Digest: {digest}\nTag: v1\n",
    ).strip()
    run_git("--git-dir", path, "update-ref", "refs/heads/hroot/app", commit)
    return digest, config


def test_a_format_1_repository_is_upgraded_in_place_and_served(tmp_path: Path) -> None:
    path = tmp_path / "old.git"
    digest, _ = _format_1_repository(path)
    store = Store.open(path, create=False)
    assert run_git("--git-dir", path, "config", "hroot.format").strip() == str(FORMAT)
    assert store.get_manifest("app", "v1").digest == digest
    assert store.tags("app") == ["v1"]

    pushed = push_image(store, "app", "v2")
    index = git(store, "show", "hroot/app:index.json")
    assert index.count("\n") == 4, index  # opening line, two descriptors, closing line
    assert json.loads(index)["manifests"][1]["digest"] == pushed.digest
    assert_fsck_clean(store)


def test_index_json_diffs_show_the_tag_that_moved(store: Store) -> None:
    push_image(store, "app", "stable")
    first = push_image(store, "app", "v1")
    second = push_image(store, "app", "v1")
    diff = git(store, "log", "-p", "-1", "--format=", "hroot/app", "--", "index.json")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert len(changed) == 3, diff  # v1 left the first image, which stays untagged
    assert any(line.startswith("-") and first.digest in line for line in changed)
    assert any(
        line.startswith("+") and second.digest in line and '"v1"' in line for line in changed
    )
    assert not any("stable" in line for line in changed)
