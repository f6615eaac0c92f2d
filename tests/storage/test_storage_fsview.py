"""The filesystem view (storage.fsview, docs/format.md §9) of images made of hand-made
tars, checked with the git command line on a real repository."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from storage import Store, fsck, fsview
from storage.layers import Limits
from tests.documents import OCI_INDEX, OCI_MANIFEST, descriptor
from tests.storage.images import assert_fsck_clean, git, image_config, push_layers

Member = tuple[tarfile.TarInfo, bytes]


# --- tar entries --------------------------------------------------------------------------


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def folder(name: str, **fields: object) -> Member:
    return entry(name, tarfile.DIRTYPE, **fields)


def symlink(name: str, target: str) -> Member:
    return entry(name, tarfile.SYMTYPE, linkname=target)


def hardlink(name: str, target: str) -> Member:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def tar(*members: Member) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def push(store: Store, tag: str, *layers: bytes, repo: str = "app") -> str:
    """Push an image of these layers (already compressed or not) under `tag`."""
    return push_layers(store, repo, tag, image_config(), list(layers))


def build(store: Store, repo: str = "app", **kwargs: object) -> fsview.Built:
    built = store.build_fs_view(repo, **kwargs)  # type: ignore[arg-type]
    assert_fsck_clean(store)
    return built


def tree(store: Store, rev: str) -> dict[str, str]:
    """Path -> git mode of every file under `rev` (`hroot/fs/app:v1`)."""
    lines = git(store, "ls-tree", "-r", "--full-tree", rev).splitlines()
    return {line.split("\t", 1)[1]: line.split(" ", 1)[0] for line in lines}


def meta(store: Store, tag: str, repo: str = "app") -> list[str]:
    return git(store, "show", f"hroot/fs/{repo}:.hroot/{tag}.meta").splitlines()


def entry_line(lines: list[str], path: str) -> str:
    found = [line for line in lines if line.split(" ", 1)[0] == path]
    assert len(found) == 1, f"{path} in {lines}"
    return found[0]


# --- what the view holds ------------------------------------------------------------------


def test_view_holds_every_kind_of_entry_and_what_trees_cannot(store: Store) -> None:
    xattr = {"SCHILY.xattr.security.capability": "\x01\x00cap", "SCHILY.xattr.user.note": "a b"}
    layer = tar(
        folder("etc"),
        entry("etc/passwd", data=b"root:x:0:0\n"),
        entry("etc/shadow", data=b"secret\n", mode=0o640, uid=0, gid=42, gname="shadow"),
        folder("bin"),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, pax_headers=xattr),
        symlink("bin/sh", "tool"),
        symlink("etc/abs", "/etc/passwd"),
        hardlink("bin/tool2", "bin/tool"),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660),
        entry("run/pipe", tarfile.FIFOTYPE, mode=0o600),
        folder("home/user/empty", uid=1000, gid=1000, uname="user", gname="user", mode=0o700),
        entry("name with space%", data=b"x"),
        entry('odd/new\nline "quoted" back\\slash é', data=b"odd"),
    )
    push(store, "v1", gzip.compress(layer))
    built = build(store)
    assert built.built == ["v1"] and built.refused == {} and built.commit is not None

    assert tree(store, "hroot/fs/app") == {
        ".hroot/v1.meta": "100644",
        "v1/etc/passwd": "100644",
        "v1/etc/shadow": "100644",
        "v1/bin/tool": "100755",
        "v1/bin/sh": "120000",
        "v1/etc/abs": "120000",
        "v1/bin/tool2": "100755",
        "v1/name with space%": "100644",
        '"v1/odd/new\\nline \\"quoted\\" back\\\\slash \\303\\251"': "100644",
    }
    assert git(store, "show", "hroot/fs/app:v1/bin/tool2") == "#!/bin/sh\n"
    assert git(store, "cat-file", "-p", "hroot/fs/app:v1/etc/abs") == "/etc/passwd"
    lines = meta(store, "v1")
    header = [line for line in lines if not line.startswith("/")]
    assert header[1].startswith("manifest sha256:")
    body = lines[len(header) :]
    assert body == sorted(body), "entries are sorted by path"
    assert entry_line(lines, "/etc/shadow") == (
        "/etc/shadow file 0640 0:42 gname=shadow mtime=1700000000"
    )
    tool = entry_line(lines, "/bin/tool")
    assert tool.startswith("/bin/tool file 4755 0:0 mtime=1700000000 ")
    assert "SCHILY.xattr.security.capability=%01%00cap" in tool
    assert "SCHILY.xattr.user.note=a%20b" in tool
    assert "link=bin/tool" in entry_line(lines, "/bin/tool2")
    assert entry_line(lines, "/dev/null").startswith("/dev/null char 0666 0:0 ")
    assert "dev=1,3" in entry_line(lines, "/dev/null")
    assert "dev=8,0" in entry_line(lines, "/dev/sda")
    assert entry_line(lines, "/run/pipe").startswith("/run/pipe fifo 0600 ")
    assert entry_line(lines, "/home/user/empty") == (
        "/home/user/empty dir 0700 1000:1000 uname=user gname=user mtime=1700000000"
    )
    assert entry_line(lines, "/name%20with%20space%25").startswith("/name%20with%20space%25 file")
    odd = '/odd/new%0Aline%20"quoted"%20back\\slash%20é'
    assert entry_line(lines, odd).startswith(odd + " file 0644 ")
    subject, trailer = git(
        store, "log", "-1", "--format=%s%n%(trailers:key=Image-Commit,valueonly)", "hroot/fs/app"
    ).splitlines()[:2]
    assert subject == "fs view of app: built v1"
    assert trailer == git(store, "rev-parse", "hroot/app").strip()


def test_whiteouts_hide_lower_layers_only(store: Store) -> None:
    lower = tar(
        entry("etc/gone", data=b"gone"),
        entry("etc/kept", data=b"kept"),
        folder("var/cache"),
        entry("var/cache/old", data=b"old"),
        entry("var/cache/sub/deep", data=b"deep"),
        folder("opt/tree"),
        entry("opt/tree/a", data=b"a"),
    )
    upper = tar(
        entry("etc/.wh.gone"),
        entry("var/cache/new-before", data=b"before"),  # the same layer, before the marker
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new-after", data=b"after"),
        entry("opt/.wh.tree"),
        entry("var/cache/sub/mine", data=b"mine"),
    )
    push(store, "v1", lower, upper)
    build(store)
    assert sorted(tree(store, "hroot/fs/app:v1")) == [
        "etc/kept",
        "var/cache/new-after",
        "var/cache/new-before",
        "var/cache/sub/mine",
    ]
    assert not any(".wh." in line for line in meta(store, "v1"))


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.compress, lambda data: data])
def test_gzip_zstd_and_plain_layers(store: Store, compress: object) -> None:
    layers = [tar(entry("a", data=b"1" * 100_000)), tar(entry("b", data=b"2"))]
    push(store, "v1", *(compress(layer) for layer in layers))  # type: ignore[operator]
    build(store)
    assert sorted(tree(store, "hroot/fs/app:v1")) == ["a", "b"]
    assert git(store, "cat-file", "-s", "hroot/fs/app:v1/a").strip() == "100000"


def test_gzip_of_several_members(store: Store) -> None:
    push(
        store,
        "v1",
        gzip.compress(tar(entry("a", data=b"A"))[:700])
        + gzip.compress(tar(entry("a", data=b"A"))[700:]),
    )
    build(store)
    assert list(tree(store, "hroot/fs/app:v1")) == ["a"]


def test_multi_platform_index_has_a_folder_per_platform(store: Store) -> None:
    children = []
    for platform, data in (("linux/amd64", b"amd"), ("linux/arm64/v8", b"arm")):
        layer = tar(entry("etc/arch", data=data))
        digest = push_layers(store, "app", None, image_config(platform), [layer])
        manifest = git(store, "show", f"hroot/app:blobs/sha256/{digest.split(':')[1]}")
        os_, arch, *variant = platform.split("/")
        child = {
            **descriptor(OCI_MANIFEST, manifest.encode()),
            "platform": {"os": os_, "architecture": arch},
        }
        if variant:
            child["platform"]["variant"] = variant[0]
        children.append(child)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    store.put_manifest("app", "multi", body.encode())
    build(store)
    assert tree(store, "hroot/fs/app:multi") == {
        "linux-amd64/etc/arch": "100644",
        "linux-arm64-v8/etc/arch": "100644",
    }
    assert git(store, "show", "hroot/fs/app:multi/linux-arm64-v8/etc/arch") == "arm"
    lines = meta(store, "multi")
    assert sum(line.startswith("image linux-") for line in lines) == 2
    assert entry_line(lines, "/linux-amd64/etc/arch").startswith("/linux-amd64/etc/arch file")
    old = store.diff(("app", "multi"), ("app", "multi"), platform="linux/arm64/v8")
    assert old.files == []


# --- git diff and git log on the view -----------------------------------------------------


def three_versions(store: Store) -> None:
    base = tar(
        folder("etc"),
        entry("etc/x", data=b"one\n"),
        entry("etc/same", data=b"same\n"),
        entry("usr/bin/app", data=b"app 1\n", mode=0o755),
    )
    push(store, "v1", gzip.compress(base))
    build(store)
    push(
        store,
        "v2",
        gzip.compress(base),
        tar(entry("etc/x", data=b"two\n"), entry("etc/new", data=b"new\n")),
    )
    build(store)


def test_git_diff_between_tags_names_exactly_the_changed_files(store: Store) -> None:
    three_versions(store)
    stat = git(store, "diff", "--name-status", "hroot/fs/app:v1", "hroot/fs/app:v2")
    assert stat.splitlines() == ["A\tetc/new", "M\tetc/x"]
    assert "2 files changed" in git(store, "diff", "--stat", "hroot/fs/app:v1", "hroot/fs/app:v2")


def test_git_log_follows_a_file_as_its_tag_moves(store: Store) -> None:
    three_versions(store)
    push(store, "v1", tar(entry("etc/x", data=b"three\n")))  # v1 moves to another image
    built = build(store)
    assert built.built == ["v1"] and built.kept == ["v2"]
    log = git(store, "log", "-p", "--format=%s", "hroot/fs/app", "--", "v1/etc/x")
    assert "-one\n+three\n" in log
    assert log.count("fs view of app") == 2  # the first build and the move


def test_store_diff_lists_files_added_removed_and_changed(store: Store) -> None:
    three_versions(store)
    push(
        store,
        "v3",
        gzip.compress(tar(folder("etc"), entry("etc/x", data=b"one\n", mode=0o600, uid=7))),
    )
    build(store)
    found = store.diff(("app", "v1"), ("app", "v3")).files
    assert found is not None
    by_path = {change.path: change for change in found}
    assert sorted(by_path) == ["/etc/same", "/etc/x", "/usr/bin/app"]
    assert by_path["/etc/same"].change == "removed" and by_path["/etc/same"].old_size == 5
    x = by_path["/etc/x"]
    assert (x.change, x.old_mode, x.new_mode, x.old_owner, x.new_owner) == (
        "changed",
        "0644",
        "0600",
        "0:0",
        "7:0",
    )
    assert by_path["/usr/bin/app"].change == "removed"


def test_a_tag_on_an_image_shown_already_reuses_its_folder(store: Store) -> None:
    three_versions(store)
    digest = store.get_manifest("app", "v2").digest
    store.put_manifest("app", "latest", store.get_manifest("app", digest).body)
    built = build(store)
    assert built.built == ["latest"]
    assert git(store, "rev-parse", "hroot/fs/app:latest") == git(
        store, "rev-parse", "hroot/fs/app:v2"
    )
    assert build(store).commit is None  # nothing changed: no commit
    store.delete_tag("app", "v1")
    assert build(store).removed == ["v1"]
    assert "v1" not in git(store, "ls-tree", "--name-only", "hroot/fs/app").split()


# --- hostile and damaged layers -----------------------------------------------------------


def _sparse_header(name: str, size: int) -> bytes:
    """A tar whose one file says it has `size` bytes and brings a few."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024


HOSTILE = {
    "dotdot": (tar(entry("../escaped", data=b"x")), "leaves the root"),
    "dotdot-inside": (tar(entry("etc/../../escaped", data=b"x")), "leaves the root"),
    "absolute": (tar(entry("/etc/escaped", data=b"x")), "absolute path"),
    "through-symlink": (tar(symlink("etc", "/tmp"), entry("etc/escaped", data=b"x")), "symlink"),
    "hardlink-missing": (tar(hardlink("a", "nowhere")), "no file"),
    "hardlink-out": (tar(hardlink("a", "../../etc/passwd")), "leaves the root"),
    "huge-sparse": (_sparse_header("huge", 10 << 30), "over"),
    "truncated-gzip": (
        gzip.compress(tar(entry("a", data=os.urandom(50_000))))[:20_000],
        "ends early",
    ),
    "truncated-plain": (tar(entry("a", data=os.urandom(50_000)))[:20_000], "ends early"),
    "corrupt-gzip": (b"\x1f\x8b\x08\x00" + b"garbage" * 100, "gzip"),
    "dotgit": (tar(entry(".git/config", data=b"[core]")), ".git"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_without_effect(store: Store, tmp_path: Path, case: str) -> None:
    layer, reason = HOSTILE[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    push(store, "good", tar(entry("ok", data=b"ok")))
    push(store, "bad", tar(entry("first", data=b"first")), layer)  # the push succeeds
    built = build(store)
    assert list(built.refused) == ["bad"] and reason in built.refused["bad"], built.refused
    assert "\n" not in built.refused["bad"]
    names = git(store, "ls-tree", "--name-only", "hroot/fs/app").split()
    assert names == [".hroot", "good"]  # the refused tag has no folder
    assert f"refused . {built.refused['bad']}" in meta(store, "bad")
    trailers = git(store, "log", "-1", "--format=%(trailers:key=Refused,valueonly)", "hroot/fs/app")
    assert trailers.strip() == f"bad: {built.refused['bad']}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing outside git
    assert not (tmp_path.parent / "escaped").exists()
    assert not list(store.path.glob("fast_import_crash_*"))
    assert build(store).commit is None  # refused once, not tried again until the tag moves


def test_entry_and_size_limits(store: Store) -> None:
    push(store, "many", tar(*(entry(f"f{n}", data=b"x") for n in range(20))))
    push(store, "big", tar(entry("a", data=b"x" * 600), entry("b", data=b"x" * 600)))
    built = build(store, limits=Limits(entries=10, total_bytes=1000, file_bytes=700))
    assert sorted(built.refused) == ["big", "many"]
    assert built.refused["many"].endswith(": more than 10 entries")
    assert built.refused["big"].endswith(": more than 1000 bytes of files")


def test_corrupt_deflate_inside_gzip_is_refused(store: Store) -> None:
    good = gzip.compress(tar(entry("a", data=b"hello world " * 5000)))
    damaged = good[:30] + bytes(b ^ 0xFF for b in good[30:60]) + good[60:]
    push(store, "v1", damaged)
    assert build(store).refused["v1"].endswith("corrupt gzip: Error -1 Invalid deflate block found")


# --- the view among the rest of the registry ----------------------------------------------


def test_a_file_of_many_pieces_is_one_blob_and_one_cut_short_leaves_nothing(
    store: Store,
) -> None:
    """A file bigger than what is hashed whole is written into the pack a piece at a
    time; one whose tar ends inside it is refused, and what was written of it is not
    kept: the pack stays sound."""
    big = os.urandom(9 << 20)
    push(store, "v1", gzip.compress(tar(entry("big", data=big), entry("small", data=b"s")), 1))
    whole = tar(entry("first", data=b"f"), entry("cut", data=os.urandom(9 << 20)))
    push(store, "v2", whole[: 512 * 3 + (5 << 20)])  # ends 5 MiB into "cut"
    built = build(store)
    assert built.built == ["v1", "v2"] and "ends early" in built.refused["v2"]
    blob = git(store, "rev-parse", "hroot/fs/app:v1/big").strip()
    hashed = subprocess.run(["git", "hash-object", "--stdin"], input=big, capture_output=True)
    assert blob == hashed.stdout.decode().strip()
    shown = subprocess.run(
        ["git", "--git-dir", str(store.path), "cat-file", "blob", blob], capture_output=True
    )
    assert shown.stdout == big
    assert_fsck_clean(store)


def test_remove_drops_the_view_and_fsck_reports_an_orphan(store: Store) -> None:
    push(store, "v1", tar(entry("a", data=b"a")))
    build(store)
    store.remove("app")
    assert git(store, "for-each-ref", "refs/hroot/fs/").strip() == ""
    push(store, "v1", tar(entry("a", data=b"a")), repo="other")
    build(store, "other")
    git(store, "branch", "-D", "hroot/other")  # by hand: the view stays behind
    report = fsck.check(store.path)
    assert [p.text for p in report.problems if p.leftover] == [
        "refs/hroot/fs/other: the view of a repository that does not exist"
    ]
    assert fsck.repair(store.path, report) and not git(store, "for-each-ref", "refs/hroot/fs/")


def test_gc_keeps_what_the_view_holds(store: Store) -> None:
    push(store, "v1", gzip.compress(tar(entry("etc/x", data=b"kept by the view\n"))))
    build(store)
    store.gc(expiry=0)
    assert git(store, "show", "hroot/fs/app:v1/etc/x") == "kept by the view\n"
    assert_fsck_clean(store)


def test_tags_of_one_image_built_together_have_the_same_folder(store: Store) -> None:
    digest = push(store, "v1", tar(entry("etc/x", data=b"x"), symlink("etc/y", "x")))
    store.put_manifest("app", "latest", store.get_manifest("app", digest).body)
    store.put_manifest("app", "a-first", store.get_manifest("app", digest).body)
    assert build(store).built == ["a-first", "latest", "v1"]
    folders = {
        tag: git(store, "rev-parse", f"hroot/fs/app:{tag}") for tag in ("a-first", "latest", "v1")
    }
    assert len(set(folders.values())) == 1
    assert meta(store, "latest") == meta(store, "v1")
