"""storage.history through the Store: log, show, diff and usage, checked against git itself."""

from __future__ import annotations

import gzip
import json
import os
from itertools import islice

import pytest
import zstandard

from storage import Store
from storage.errors import ManifestUnknown, NameInvalid, NameUnknown, Unsupported
from tests.documents import OCI_MANIFEST, digest_of
from tests.storage.images import git, image_config, push_image, push_layers, put, tar_of


def first_parents(store: Store, repo: str) -> list[str]:
    return git(store, "log", "--first-parent", "--format=%H", f"hroot/{repo}").split()


def test_log_shows_tag_moves_deletes_and_base_images(store: Store) -> None:
    shared = os.urandom(500)
    base = push_layers(store, "base", "1", image_config(), [shared])
    first = push_layers(store, "app", "v1", image_config(), [shared, os.urandom(300)])
    second = push_layers(store, "app", "v1", image_config(), [shared, os.urandom(700)])
    store.delete_tag("app", "v1")
    store.delete_manifest("app", first)

    entries = list(store.log("app"))

    assert [e.summary for e in entries] == [
        f"delete manifest app@{first}",
        "delete tag app:v1",
        f"push app:v1 {second}",
        f"push app:v1 {first}",
        "create app",  # the empty first commit a second parent needs (lineage)
    ]
    assert [e.commit for e in entries] == first_parents(store, "app")
    assert [e.action for e in entries] == ["delete", "delete", "push", "push", "create"]
    deleted_manifest, deleted_tag, moved, added, created = entries
    assert created.tags == [] and created.image is None and created.bases == []
    assert [(t.tag, t.old, t.new) for t in added.tags] == [("v1", None, first)]
    assert [(t.tag, t.old, t.new) for t in moved.tags] == [("v1", first, second)]
    assert [(t.tag, t.old, t.new) for t in deleted_tag.tags] == [("v1", second, None)]
    assert deleted_manifest.tags == []  # it was untagged by then
    assert deleted_manifest.image is not None and deleted_manifest.image.digest == first
    assert moved.image is not None
    assert moved.image.platforms == ["linux/amd64"]
    assert moved.image.size == len(json.dumps(image_config())) + 500 + 700
    for pushed in (moved, added):
        assert [(b.repository, b.digest, b.platform) for b in pushed.bases] == [
            ("base", base, None)
        ]
    committed = git(store, "log", "-1", "--format=%ct", entries[2].commit).strip()
    assert int(entries[2].time.timestamp()) == int(committed)


def test_log_reads_only_the_commits_it_is_asked_for(store: Store) -> None:
    """A history whose third commit's parent is missing: two entries never touch it."""
    push_image(store, "app", "v1")
    tip = first_parents(store, "app")[0]
    tree = git(store, "rev-parse", f"{tip}^{{tree}}").strip()
    broken = git(
        store,
        "hash-object",
        "-t",
        "commit",
        "-w",
        "--literally",
        "--stdin",
        input_text=f"tree {tree}\nparent {'1' * 40}\nauthor a <a> 0 +0000\n"
        "committer a <a> 0 +0000\n\nbroken\n",
    ).strip()
    head = broken
    for message in ("one", "two"):
        head = git(store, "commit-tree", tree, "-p", head, "-m", message).strip()
    git(store, "update-ref", "refs/heads/hroot/app", head)

    assert [e.summary for e in store.log("app", limit=2)] == ["two", "one"]
    assert [e.action for e in islice(store.log("app"), 2)] == ["commit", "commit"]
    with pytest.raises(KeyError):
        list(store.log("app", limit=3))  # the third entry reads the missing parent


def test_log_of_unknown_or_invalid_repository(store: Store) -> None:
    with pytest.raises(NameUnknown):
        store.log("nothing")
    with pytest.raises(NameInvalid):
        store.log("Not/Valid")


def test_show_summarises_config_and_measures_layers(store: Store) -> None:
    tar = tar_of({"etc/hello": b"hello " * 5000, "bin/tool": os.urandom(20000)})
    gzipped = gzip.compress(tar)
    zstd = zstandard.ZstdCompressor().compress(tar_of({"usr/data": b"z" * 100_000}))
    base = push_layers(store, "base", "1", image_config(), [tar])
    config = image_config(
        "linux/arm64/v8",
        Entrypoint=["/bin/tool"],
        Cmd=["--serve"],
        Env=["PATH=/bin", "MODE=prod"],
        User="app",
        WorkingDir="/srv",
        ExposedPorts={"8080/tcp": {}},
        Labels={"team": "core"},
    )
    config["created"] = "2026-01-02T03:04:05Z"
    digest = push_layers(store, "app", "v1", config, [tar, gzipped, zstd])

    image = store.image("app", "v1")

    assert (image.digest, image.media_type, image.tags) == (digest, OCI_MANIFEST, ["v1"])
    assert image.platforms == ["linux/arm64/v8"]
    assert image.config is not None
    assert image.config.entrypoint == ["/bin/tool"]
    assert image.config.cmd == ["--serve"]
    assert image.config.env == ["PATH=/bin", "MODE=prod"]
    assert (image.config.user, image.config.working_dir) == ("app", "/srv")
    assert image.config.exposed_ports == ["8080/tcp"]
    assert image.config.labels == {"team": "core"}
    assert image.config.created == "2026-01-02T03:04:05Z"
    assert image.config_digest == digest_of(json.dumps(config).encode())
    assert [(layer.size, layer.uncompressed_size) for layer in image.layers] == [
        (len(tar), len(tar)),
        (len(gzipped), len(tar)),
        (len(zstd), len(tar_of({"usr/data": b"z" * 100_000}))),
    ]
    assert [layer.shared_with for layer in image.layers] == [["base"], [], []]
    assert image.size == len(json.dumps(config)) + len(tar) + len(gzipped) + len(zstd)
    assert [(b.repository, b.digest) for b in image.bases] == [("base", base)]
    assert image.pushed is not None
    assert image.pushed.commit == first_parents(store, "app")[0]
    assert store.image("app", digest).digest == digest


def test_show_index_lists_platforms_and_picks_one(store: Store) -> None:
    bases, children = {}, {}
    for platform, size in (("linux/amd64", 100), ("linux/arm64/v8", 200)):
        under = os.urandom(50)
        bases[platform] = push_layers(store, "os", None, image_config(platform), [under])
        layers = [under, os.urandom(size)]
        children[platform] = push_layers(store, "multi", None, image_config(platform), layers)
    bodies = {}
    for platform, digest in children.items():
        found = store.get_manifest("multi", digest)
        bodies[platform] = found.body
    os_arch = {
        p: dict(zip(("os", "architecture", "variant"), p.split("/"), strict=False))
        for p in children
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": children[p],
                "size": len(bodies[p]),
                "platform": os_arch[p],
            }
            for p in children
        ],
    }
    store.put_manifest("multi", "latest", json.dumps(index).encode())

    shown = store.image("multi", "latest")

    assert shown.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert [(c.platform, c.digest) for c in shown.children] == list(children.items())
    sizes = [c.size for c in shown.children]
    assert sizes == [
        len(json.dumps(image_config(p))) + 50 + s
        for p, s in (("linux/amd64", 100), ("linux/arm64/v8", 200))
    ]
    per_platform = [("os", digest, platform) for platform, digest in bases.items()]
    assert [(b.repository, b.digest, b.platform) for b in shown.bases] == per_platform
    pushed = next(iter(store.log("multi", limit=1)))
    assert [(b.repository, b.digest, b.platform) for b in pushed.bases] == per_platform
    assert pushed.image is not None and pushed.image.size == sum(sizes)
    assert pushed.image.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert shown.size == sum(sizes) and shown.layers == [] and shown.config is None
    arm = store.image("multi", "latest", platform="linux/arm64/v8")
    assert arm.digest == children["linux/arm64/v8"] and len(arm.layers) == 2
    assert [layer.shared_with for layer in arm.layers] == [["os"], []]
    with pytest.raises(ManifestUnknown, match="linux/s390x"):
        store.image("multi", "latest", platform="linux/s390x")
    with pytest.raises(Unsupported, match="multi-platform index"):
        store.diff(("multi", "latest"), ("multi", children["linux/amd64"]))
    assert store.diff(("multi", "latest"), ("multi", "latest"), "linux/amd64").size.change == 0


def test_show_unknown_tag_digest_or_repository(store: Store) -> None:
    push_image(store, "app", "v1")
    with pytest.raises(ManifestUnknown, match="app:v2"):
        store.image("app", "v2")
    with pytest.raises(ManifestUnknown):
        store.image("app", digest_of(b"nothing"))
    with pytest.raises(NameUnknown):
        store.image("other", "v1")


def test_diff_lists_layers_and_config_changes(store: Store) -> None:
    kept, gone, new_one, new_two = (os.urandom(n) for n in (400, 300, 200, 100))
    old_config = image_config(
        Cmd=["sh"],
        Env=["PATH=/bin", "OLD=1"],
        User="root",
        ExposedPorts={"80/tcp": {}},
        Labels={"same": "1", "moved": "a", "dropped": "x"},
    )
    new_config = image_config(
        Cmd=["/bin/app", "--fast"],
        Env=["PATH=/bin", "NEW=2"],
        User="root",
        ExposedPorts={"443/tcp": {}},
        Labels={"same": "1", "moved": "b", "fresh": "y"},
    )
    push_layers(store, "app", "old", old_config, [kept, gone])
    push_layers(store, "other", "new", new_config, [kept, new_one, new_two])

    found = store.diff(("app", "old"), ("other", "new"))

    assert (found.old.repository, found.old.reference) == ("app", "old")
    assert (found.new.repository, found.new.reference) == ("other", "new")
    as_pairs = lambda layers: [(layer.digest, layer.size) for layer in layers]  # noqa: E731
    assert as_pairs(found.layers.kept) == [(digest_of(kept), 400)]
    assert as_pairs(found.layers.removed) == [(digest_of(gone), 300)]
    assert as_pairs(found.layers.added) == [(digest_of(new_one), 200), (digest_of(new_two), 100)]
    config = found.config
    assert set(config.changed) == {"cmd"}
    assert (config.changed["cmd"].old, config.changed["cmd"].new) == (
        ["sh"],
        ["/bin/app", "--fast"],
    )
    assert (config.env.added, config.env.removed) == (["NEW=2"], ["OLD=1"])
    assert (config.exposed_ports.added, config.exposed_ports.removed) == (["443/tcp"], ["80/tcp"])
    assert config.labels.added == {"fresh": "y"} and config.labels.removed == {"dropped": "x"}
    assert {k: (c.old, c.new) for k, c in config.labels.changed.items()} == {"moved": ("a", "b")}
    old_size = len(json.dumps(old_config)) + 700
    new_size = len(json.dumps(new_config)) + 700
    assert (found.size.old, found.size.new, found.size.change) == (
        old_size,
        new_size,
        new_size - old_size,
    )


def test_usage_counts_unique_and_shared_bytes_as_git_does(store: Store) -> None:
    shared = os.urandom(5000)
    push_layers(store, "base", "1", image_config(), [shared])
    push_layers(store, "app", "v1", image_config(User="a"), [shared, os.urandom(3000)])
    push_layers(store, "app", "v2", image_config(User="b"), [shared, os.urandom(1000)])
    push_layers(store, "lone", "1", image_config(User="c"), [os.urandom(2000)])

    usage = store.usage()

    held: dict[str, dict[str, int]] = {}  # repository -> blob path -> size, as git lists them
    for repo in ("app", "base", "lone"):
        listing = git(store, "ls-tree", "-r", "-l", f"hroot/{repo}", "blobs")
        held[repo] = {line.split()[4]: int(line.split()[3]) for line in listing.splitlines()}
    by_name = {u.repository: u for u in usage.repositories}
    assert list(by_name) == ["app", "base", "lone"]
    for repo, blobs in held.items():
        others = set().union(*(set(b) for r, b in held.items() if r != repo))
        found = by_name[repo]
        assert (found.blobs, found.size) == (len(blobs), sum(blobs.values()))
        assert found.shared == sum(size for path, size in blobs.items() if path in others)
        assert found.unique == found.size - found.shared
    assert by_name["app"].shared == by_name["base"].shared == 5000
    assert by_name["lone"].shared == 0
    assert (by_name["app"].tags, by_name["app"].manifests) == (2, 2)
    distinct = {path: size for blobs in held.values() for path, size in blobs.items()}
    assert (usage.blobs, usage.size) == (len(distinct), sum(distinct.values()))


def test_holders_are_the_repositories_whose_tip_holds_each_blob(store: Store) -> None:
    """One `git cat-file` answers for names with `/` and `.lock` (encoded in their branch
    names), a repository with no branch, a blob only uploaded, and what is no digest."""
    shared, own, loose = tar_of({"a": b"shared"}), tar_of({"b": b"own"}), tar_of({"c": b"up"})
    push_layers(store, "team/app", "v1", image_config("linux/amd64"), [shared])
    push_layers(store, "x.lock", "v1", image_config("linux/amd64"), [shared, own])
    put(store, "team/app", loose)  # staged for a push to come, in no image yet
    wanted = [digest_of(shared), digest_of(own), digest_of(loose), "sha256:nope"]

    found = store.holders(wanted, ["team/app", "x.lock", "never/pushed"])

    assert found == {
        digest_of(shared): ["team/app", "x.lock"],
        digest_of(own): ["x.lock"],
        digest_of(loose): [],
        "sha256:nope": [],
    }


def test_usage_after_a_restart_learns_many_sizes_from_git(store: Store) -> None:
    """More blobs than _READ_AHEAD, none cached: their sizes come from one `git cat-file
    --batch-check`, and equal what `git ls-tree -l` lists."""
    for n in range(20):
        push_layers(store, "many", f"v{n}", image_config(User=str(n)), [os.urandom(100 + n)])
    restarted = Store.open(store.path)
    try:
        (found,) = restarted.usage().repositories
    finally:
        restarted.close()
    listing = git(store, "ls-tree", "-r", "-l", "hroot/many", "blobs").splitlines()
    sizes = [int(line.split()[3]) for line in listing]
    assert len(sizes) == 60  # a config, a layer and a manifest per push
    assert (found.blobs, found.size, found.unique) == (len(sizes), sum(sizes), sum(sizes))
