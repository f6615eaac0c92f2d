"""Concurrent writers and a repository changed behind the store's back: git is the truth."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import Store, digests
from storage.errors import ManifestBlobUnknown, ManifestUnknown, NameUnknown
from storage.repository import RepositoryRefused
from tests.documents import image_manifest
from tests.storage.images import assert_fsck_clean, git, push_image

PUSHES_PER_PROCESS = 100


def _push_tags(path: str, prefix: str, start: multiprocessing.synchronize.Event) -> None:
    store = Store.open(path)
    start.wait()
    for i in range(PUSHES_PER_PROCESS):
        push_image(store, "shared/img", f"{prefix}-{i}", layers=1, layer_size=64)
    store.close()


def test_two_processes_pushing_into_one_repository_lose_nothing(store: Store) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_push_tags, args=(str(store.path), prefix, start))
        for prefix in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    expected = {f"{p}-{i}" for p in "ab" for i in range(PUSHES_PER_PROCESS)}
    assert set(store.tags("shared/img")) == expected
    log = git(store, "log", "--first-parent", "--format=%s", "hroot/shared+img").splitlines()
    assert len(log) == 2 * PUSHES_PER_PROCESS
    assert {line.split()[1].split(":")[1] for line in log} == expected
    # both writers' pushes interleave in the history
    firsts = [line.split()[1].split(":")[1][0] for line in log]
    assert sum(1 for x, y in itertools.pairwise(firsts) if x != y) > 1
    assert_fsck_clean(store)


def test_threads_pushing_at_once_lose_nothing(store: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: push_image(store, "img", f"t{i}", layers=1), range(40)))
    assert len(store.tags("img")) == 40


def test_changes_written_together_each_get_their_commit_or_their_error(store: Store) -> None:
    """Changes that queue on one branch are written as one chain of commits: each good
    push is a commit of its own, each bad change gets its own error, none is lost."""
    push_image(store, "img", "v0")
    unknown_config = image_manifest(b'{"never": "uploaded"}', [])

    def change(i: int) -> str | None:
        if i % 5 == 0:
            with pytest.raises(ManifestBlobUnknown):
                store.put_manifest("img", f"bad{i}", unknown_config)
        elif i % 7 == 0:
            with pytest.raises(ManifestUnknown):
                store.delete_tag("img", f"never{i}")
        else:
            push_image(store, "img", f"t{i}", layers=1)
            return f"t{i}"
        return None

    with ThreadPoolExecutor(8) as pool:
        pushed = [tag for tag in pool.map(change, range(60)) if tag is not None]
    assert store.tags("img") == sorted(["v0", *pushed])
    subjects = git(store, "log", "--first-parent", "--format=%s", "hroot/img").splitlines()
    assert sorted(line.split()[1] for line in subjects) == sorted(
        f"img:{tag}" for tag in ["v0", *pushed]
    )
    assert_fsck_clean(store)


def test_a_stale_lock_left_by_a_crash_is_broken(store: Store) -> None:
    push_image(store, "img", "v1")
    lock = store.path / "refs" / "heads" / "hroot" / "img.lock"
    lock.write_text("crashed writer\n")
    old = time.time() - 120
    os.utime(lock, (old, old))
    push_image(store, "img", "v2")
    assert store.tags("img") == ["v1", "v2"]
    assert not lock.exists()


def test_pushes_survive_git_pack_refs(store: Store) -> None:
    push_image(store, "img", "v1")
    git(store, "pack-refs", "--all", "--prune")
    assert store.tags("img") == ["v1"]
    push_image(store, "img", "v2")
    assert store.tags("img") == ["v1", "v2"]


@contextmanager
def reading_tags(store: Store, repo: str) -> Iterator[list[BaseException]]:
    """Four threads list repo's tags until the block ends; what they raised, if anything."""
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                store.tags(repo)
            except Exception as error:
                errors.append(error)

    with ThreadPoolExecutor(4) as readers:
        for _ in range(4):
            readers.submit(read)
        try:
            yield errors
        finally:
            done.set()


def test_reads_go_on_while_packed_refs_is_replaced(store: Store) -> None:
    """dulwich's cache of packed-refs, reloaded by one thread as another reads it, lost
    branches (NameUnknown) or raised TypeError: `git gc --auto` packs refs under load."""
    push_image(store, "img", "v1")
    git(store, "pack-refs", "--all", "--prune")
    packed = (store.path / "packed-refs").read_text()
    tip = git(store, "rev-parse", "hroot/img").strip()
    padded = packed + "".join(f"{tip} refs/heads/padding/p{n:04d}\n" for n in range(2000))
    with reading_tags(store, "img") as errors:
        for n in range(300):  # each a new file, as git writes it: the cache is reloaded
            (store.path / "packed-refs.new").write_text(padded if n % 2 else packed)
            os.replace(store.path / "packed-refs.new", store.path / "packed-refs")
    assert errors == []


def test_reads_go_on_while_pushes_remove_packed_staging_refs(store: Store) -> None:
    """A push that empties a packed staging ref rewrites packed-refs and drops dulwich's
    cache of it, which readers in other threads were filling."""
    push_image(store, "img", "v1")
    images = {}
    for n in range(40):
        config, layer = f'{{"n":{n}}}'.encode(), os.urandom(64)
        for data in (config, layer):
            store.put_blob(f"r{n}", str(digests.of(data)), io.BytesIO(data), len(data))
        images[f"r{n}"] = image_manifest(config, [layer])
    tip = git(store, "rev-parse", "hroot/img").strip()
    padding = "".join(f"create refs/heads/padding/p{n:04d} {tip}\n" for n in range(2000))
    git(store, "update-ref", "--stdin", input_text=padding)  # a long packed-refs to read
    git(store, "pack-refs", "--all", "--prune")
    with reading_tags(store, "img") as errors:
        for repo, manifest in images.items():
            store.put_manifest(repo, "v1", manifest)
    assert errors == []
    assert "refs/hroot/staging/" not in (store.path / "packed-refs").read_text()


def test_reads_follow_refs_moved_by_hand(store: Store, tmp_path: Path) -> None:
    push_image(store, "img", "v1")
    first = git(store, "rev-parse", "hroot/img").strip()
    push_image(store, "img", "v2")
    assert store.tags("img") == ["v1", "v2"]
    git(store, "update-ref", "refs/heads/hroot/img", first)
    assert store.tags("img") == ["v1"]
    git(store, "branch", "-D", "hroot/img")
    assert store.repositories() == []
    with pytest.raises(NameUnknown):
        store.tags("img")
    # a git fetch from another registry brings a repository in
    other = Store.open(tmp_path / "other.git")
    pushed = push_image(other, "fetched", "v9")
    git(store, "fetch", "--quiet", str(other.path), "refs/heads/hroot/*:refs/heads/hroot/*")
    assert store.repositories() == ["fetched"]
    assert store.get_manifest("fetched", "v9").body == pushed.manifest
    assert_fsck_clean(store)


def test_git_gc_runs_in_the_background_and_reads_go_on(tmp_path: Path) -> None:
    """Every gc_every commits `git gc --auto` packs the loose objects pushes leave."""
    store = Store.open(tmp_path / "hroot.git", gc_every=5)
    # git gc --auto guesses the loose objects from objects/17: with a threshold of
    # one object, two there make it find something to do at once
    git(store, "config", "gc.auto", "1")
    n = 0
    while len(list((store.path / "objects" / "17").glob("*"))) < 2:
        git(store, "hash-object", "-w", "--stdin", input_text=str(n))
        n += 1
    images = [push_image(store, "img", f"v{i}", layer_size=20_000) for i in range(6)]
    packs = store.path / "objects" / "pack"
    deadline = time.monotonic() + 60
    while not any(p.suffix == ".pack" for p in packs.iterdir()):
        assert time.monotonic() < deadline, "git gc --auto did not pack anything"
        time.sleep(0.1)
    while (store.path / "gc.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for image in images:
        layer = str(digests.of(image.layers[0]))
        with store.open_blob("img", layer) as reader:
            assert reader.read(-1) == image.layers[0]
    push_image(store, "img", "after")
    assert len(store.tags("img")) == 7
    assert_fsck_clean(store)


def test_a_git_config_dulwich_cannot_read_is_a_clear_error(store: Store) -> None:
    git(store, "config", "core.bigFileThreshold", "8m")  # git reads it; dulwich does not
    with pytest.raises(RepositoryRefused, match="dulwich cannot read"):
        Store.open(store.path)
    git(store, "config", "core.bigFileThreshold", str(8 << 20))
    assert Store.open(store.path).repositories() == []
