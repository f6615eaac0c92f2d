"""Retention (storage.retention) through `Store.retain` and `Store.gc`, checked with git."""

from __future__ import annotations

import os
import subprocess

import pytest

from storage import Store, digests, names
from storage.errors import BlobUnknown, ManifestUnknown
from storage.retention import CUT_SUMMARY, Rules
from tests.documents import image_manifest
from tests.storage.images import (
    age,
    age_objects,
    assert_fsck_clean,
    disk_bytes,
    git,
    git_blob_id,
    image_config,
    push_image,
    push_index,
    push_layers,
    put,
)


def _referrer(store: Store, repo: str, subject: str) -> str:
    """An untagged signature-like artifact whose subject is `subject`."""
    config = b"{}"
    blob = os.urandom(100)
    put(store, repo, config)
    put(store, repo, blob)
    found = store.get_manifest(repo, subject)
    body = image_manifest(
        config,
        [blob],
        subject={"mediaType": found.media_type, "digest": subject, "size": len(found.body)},
        artifactType="application/example.signature",
    )
    return store.put_manifest(repo, str(digests.of(body)), body).digest


def _tip(store: Store, repo: str) -> str:
    return git(store, "rev-parse", f"hroot/{repo}").strip()


def test_untagged_manifests_go_with_what_only_they_need(store: Store) -> None:
    old = push_image(store, "app", "latest", layer_size=50_000)
    new = push_image(store, "app", "latest", layer_size=50_000)
    assert f"Previous-Digest: {old.digest}" in git(store, "log", "-1", "--format=%B", "hroot/app")
    old_signature, new_signature = (
        _referrer(store, "app", old.digest),
        _referrer(store, "app", new.digest),
    )
    index, amd64, arm64 = push_index(store, "app", "multi")  # its images are untagged
    tip = _tip(store, "app")

    planned = store.retain(Rules(untagged_days=0), expiry=0, dry_run=True)

    assert planned.manifests == {"app": sorted([old.digest, old_signature])}
    assert planned.blobs["app"] >= 4  # both manifests, the old config and layers
    assert _tip(store, "app") == tip  # a dry run writes nothing

    assert store.retain(Rules(untagged_days=1), expiry=0).manifests == {}  # all younger
    dropped = store.retain(Rules(untagged_days=0), expiry=0)

    assert dropped.manifests == planned.manifests
    assert git(store, "log", "-1", "--format=%s", "hroot/app").strip() == (
        "drop untagged manifests of app"
    )
    for gone in (old.digest, old_signature):
        with pytest.raises(ManifestUnknown):
            store.get_manifest("app", gone)
    for kept in (new.digest, new_signature, index, amd64.digest, arm64.digest):
        assert store.get_manifest("app", kept).digest == kept
    assert store.tags("app") == ["latest", "multi"]
    tree = git(store, "ls-tree", "-r", "--name-only", "hroot/app")
    for layer in old.layers:
        assert str(digests.of(layer)).split(":")[1] not in tree
        # staged for a push that counts on it, until gc's expiry
        assert store.stat_blob("app", str(digests.of(layer))).size == len(layer)

    age_objects(store)
    staging = store.path / names.staging_ref("app").decode()
    age(staging, 10)  # staged 10 s ago: expired
    store.gc(expiry=0)

    for layer in old.layers:
        with pytest.raises(BlobUnknown):
            store.stat_blob("app", str(digests.of(layer)))
    for layer in new.layers:
        with store.open_blob("app", str(digests.of(layer))) as reader:
            assert reader.read() == layer
    assert_fsck_clean(store)


def test_gc_expiry_keeps_a_just_untagged_manifest(store: Store) -> None:
    push_image(store, "app", "latest")
    push_image(store, "app", "latest")
    assert store.retain(Rules(untagged_days=0)).manifests == {}  # gc's default expiry: a day


def test_history_keeps_the_last_commits_on_a_marked_root(store: Store) -> None:
    for _ in range(10):
        push_image(store, "app", "latest", layer_size=20_000)
    tree = git(store, "rev-parse", "hroot/app^{tree}")
    messages = git(store, "log", "--format=%B", "-3", "hroot/app")
    cut_at = git(store, "rev-parse", "hroot/app~3").strip()

    dropped = store.retain(Rules(keep_commits=3))

    assert dropped.commits == {"app": 7}
    assert git(store, "rev-list", "--count", "hroot/app").strip() == "4"
    assert git(store, "rev-parse", "hroot/app^{tree}") == tree
    assert git(store, "log", "--format=%B", "-3", "hroot/app") == messages
    root = git(store, "log", "-1", "--format=%B", "hroot/app~3")
    assert root.splitlines()[0] == CUT_SUMMARY
    assert f"Earlier-History: {cut_at}" in root
    assert git(store, "ls-tree", "hroot/app~3") == ""  # an empty root

    tip = _tip(store, "app")
    assert store.retain(Rules(keep_commits=3)).commits == {}
    assert _tip(store, "app") == tip  # nothing more to cut: the same commits
    push_image(store, "app", "latest")
    store.retain(Rules(keep_commits=3))
    assert git(store, "rev-list", "--count", "hroot/app").strip() == "4"
    assert [entry.action for entry in store.log("app")][:3] == ["push"] * 3
    assert_fsck_clean(store)


def test_keep_days_keeps_what_is_younger(store: Store) -> None:
    for _ in range(3):
        push_image(store, "app", "latest")
    assert store.retain(Rules(keep_days=1)).commits == {}
    assert store.retain(Rules(keep_days=0)).commits == {"app": 2}  # the tip always stays
    assert git(store, "rev-list", "--count", "hroot/app").strip() == "2"


def test_lineage_parents_follow_their_base(store: Store) -> None:
    base_layer, app_layer = os.urandom(1000), os.urandom(1000)
    push_layers(store, "base", "1", image_config(), [base_layer])
    push_layers(store, "app", "1", image_config(), [base_layer, app_layer])
    derived = _tip(store, "app")
    assert len(git(store, "rev-list", "--parents", "-1", derived).split()) == 3
    push_layers(store, "base", "2", image_config(), [os.urandom(1000)])

    store.retain(Rules(keep_commits=2))  # the base's push is still in its history
    derived = _tip(store, "app")
    base_push = git(store, "rev-parse", "hroot/base~1").strip()
    assert git(store, "rev-list", "--parents", "-1", derived).split()[2] == base_push

    store.retain(Rules(keep_commits=1))  # cut off the base's history: the edge goes
    derived = _tip(store, "app")
    assert len(git(store, "rev-list", "--parents", "-1", derived).split()) == 2
    assert "Base-Image: base@" in git(store, "log", "-1", "--format=%B", derived)
    assert_fsck_clean(store)


def test_a_deleted_base_becomes_reclaimable(store: Store) -> None:
    base_layer = os.urandom(1000)
    base_config = image_config(Cmd=["base"])
    base_only = os.urandom(2 << 20)
    push_layers(store, "base", "old", image_config(), [base_only])
    push_layers(store, "base", "1", base_config, [base_layer])
    push_layers(store, "app", "1", image_config(), [base_layer, os.urandom(1000)])
    git(store, "branch", "-D", "hroot/base")
    age_objects(store)
    store.gc(expiry=0)
    assert _has_object(store, base_only)  # the app's history pins it

    dropped = store.retain(Rules(keep_commits=1000))
    assert dropped.lineage == {"app": 1} and dropped.commits == {}
    age_objects(store)
    before = disk_bytes(store.path / "objects")
    store.gc(expiry=0)

    assert before - disk_bytes(store.path / "objects") >= 2 << 20
    assert not _has_object(store, base_only)
    assert store.get_manifest("app", "1")
    assert_fsck_clean(store)


def _has_object(store: Store, data: bytes) -> bool:
    """Whether the repository holds a git blob of `data`."""
    oid = git_blob_id(data)
    checked = subprocess.run(["git", "--git-dir", str(store.path), "cat-file", "-e", oid])
    return checked.returncode == 0


def test_both_rules_give_an_overwritten_tags_bytes_back_in_one_gc(store: Store) -> None:
    for _ in range(3):
        push_image(store, "app", "latest", layer_size=200_000)
    age_objects(store)
    report = store.gc(expiry=0, rules=Rules(untagged_days=0, keep_commits=1))
    assert report.reclaimed >= 2 * 2 * 200_000  # the two older versions' layers
    assert git(store, "rev-list", "--count", "hroot/app").strip() == "2"
    assert_fsck_clean(store)


def test_gc_reports_what_retention_dropped(store: Store) -> None:
    for _ in range(3):
        push_image(store, "app", "latest")
    report = store.gc(rules=Rules(keep_commits=1))
    assert report.dropped is not None and report.dropped.commits == {"app": 2}
    assert "retention dropped 0 untagged manifests, 0 blobs, 2 commits" in report.summary()
    assert store.gc().dropped is None
