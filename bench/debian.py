"""A series of 10 versions of a real Debian root filesystem, built once and cached.

v1 is `debootstrap --variant=minbase bookworm` (the release's packages), v2 enables
bookworm-updates and bookworm-security and runs `apt-get upgrade` (files of existing
packages change), v3..v10 each install a few packages, as the RUN lines of a Dockerfile
would (apt caches and lists cleaned each time). Each version is one full-rootfs layer: a
deterministic tar (GNU tar, names sorted, numeric owners, real modes, mtimes, hard links
and device nodes) saved uncompressed (`vN.tar`) and gzipped (`vN.tar.gz`, gzip -6 -n),
their sizes and sha256 digests in `series.json`.

The cache lives in `$HROOT_BENCH_CACHE/debian-series` (default `~/.cache/hroot-bench`),
outside the repository; `series.json` carries the recipe's hash, so a changed recipe
rebuilds. A build interrupted after version N resumes from `vN.tar`. Building needs root,
debootstrap and Debian's mirror; `python -m bench debian` builds (or shows) the series.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
SUITE = "bookworm"
CLEAN = "apt-get clean && rm -rf /var/lib/apt/lists/*"
SOURCES = (
    f"deb {MIRROR} {SUITE} main\\n"
    f"deb {MIRROR} {SUITE}-updates main\\n"
    f"deb {SECURITY} {SUITE}-security main\\n"
)


def _install(*packages: str) -> str:
    return (
        "apt-get update -q && apt-get install -y -q --no-install-recommends "
        f"{' '.join(packages)} && {CLEAN}"
    )


# (tag, what changes, shell run in the chroot); v1's "shell" is the debootstrap itself,
# then lists cleaned as in Debian's own images. Changing any of it changes the hash.
RECIPE: list[tuple[str, str, str]] = [
    ("v1", "debootstrap --variant=minbase bookworm", CLEAN),
    (
        "v2",
        "bookworm-updates and bookworm-security enabled, apt-get upgrade",
        f"printf '{SOURCES}' > /etc/apt/sources.list && apt-get update -q && "
        f"apt-get upgrade -y -q && {CLEAN}",
    ),
    ("v3", "+ ca-certificates", _install("ca-certificates")),
    ("v4", "+ curl", _install("curl")),
    ("v5", "+ less, procps", _install("less", "procps")),
    ("v6", "+ python3-minimal", _install("python3-minimal")),
    ("v7", "+ git (git-man, perl)", _install("git")),
    ("v8", "+ openssh-client", _install("openssh-client")),
    ("v9", "+ vim-tiny, iproute2", _install("vim-tiny", "iproute2")),
    ("v10", "+ jq, xz-utils", _install("jq", "xz-utils")),
]
FORMAT = 1  # of the files below; part of the hash
CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C",
}
POLICY_RC = "#!/bin/sh\nexit 101\n"  # no daemon starts during the build
TOOLS = ("debootstrap", "chroot", "tar", "gzip", "mount", "umount")


def recipe_hash() -> str:
    text = json.dumps({"format": FORMAT, "mirror": MIRROR, "suite": SUITE, "steps": RECIPE})
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("HROOT_BENCH_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "hroot-bench"
    return root / "debian-series"


@dataclass(frozen=True)
class Blob:
    path: Path
    size: int
    digest: str  # sha256:…


@dataclass(frozen=True)
class Version:
    tag: str
    change: str
    tar: Blob
    gzip: Blob


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] debian series: {message}", file=sys.stderr, flush=True)


def _load(folder: Path) -> dict[str, object] | None:
    try:
        return json.loads((folder / "series.json").read_text())
    except (OSError, ValueError):
        return None


def _versions(folder: Path, document: dict[str, object]) -> list[Version]:
    versions = []
    for entry in document["versions"]:  # type: ignore[attr-defined]
        blobs = {
            kind: Blob(folder / entry[kind]["file"], entry[kind]["size"], entry[kind]["digest"])
            for kind in ("tar", "gzip")
        }
        versions.append(Version(entry["tag"], entry["change"], blobs["tar"], blobs["gzip"]))
    return versions


def cached(folder: Path | None = None) -> list[Version] | None:
    """The complete series of the current recipe, if the cache holds it."""
    folder = folder or cache_dir()
    document = _load(folder)
    if not document or document.get("recipe") != recipe_hash():
        return None
    versions = _versions(folder, document)
    if len(versions) != len(RECIPE):
        return None
    for version in versions:
        for blob in (version.tar, version.gzip):
            if not blob.path.is_file() or blob.path.stat().st_size != blob.size:
                return None
    return versions


def missing(folder: Path | None = None) -> list[str]:
    """What the machine lacks to build the series (nothing when it is cached)."""
    if cached(folder) is not None:
        return []
    lacking = [
        f"{tool}: apt-get install {'debootstrap' if tool == 'debootstrap' else 'coreutils'}"
        for tool in TOOLS
        if shutil.which(tool) is None
    ]
    if os.geteuid() != 0:
        lacking.append("root: debootstrap and chroot need root to build the Debian series")
    return lacking


def _run(command: list[str], **kwargs: object) -> None:
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _in_chroot(root: Path, script: str) -> None:
    """Runs a shell script in the chroot with /proc mounted and daemons kept from starting;
    both undone whatever happens."""
    policy = root / "usr/sbin/policy-rc.d"
    proc = root / "proc"
    policy.write_text(POLICY_RC)
    policy.chmod(0o755)
    try:
        _run(["mount", "-t", "proc", "proc", str(proc)])
        try:
            _run(["chroot", str(root), "/bin/sh", "-ec", script], env=CHROOT_ENV)
        finally:
            if _mounted(proc):
                _run(["umount", "-l", str(proc)])
    finally:
        policy.unlink(missing_ok=True)


def _export(root: Path, folder: Path, tag: str) -> dict[str, object]:
    """vN.tar and vN.tar.gz of the root filesystem; their sizes and digests."""
    tar, gz = folder / f"{tag}.tar", folder / f"{tag}.tar.gz"
    names = sorted(os.listdir(root))  # top-level names as members, as docker writes them
    partial = tar.with_suffix(".partial")
    _run(
        ["tar", "--create", f"--file={partial}", "--sort=name", "--numeric-owner",
         "--format=gnu", f"--directory={root}", "--", *names]
    )  # fmt: skip
    partial.replace(tar)
    partial = gz.with_suffix(".partial")
    with partial.open("wb") as out:
        _run(["gzip", "-6", "-n", "-c", str(tar)], stdout=out)
    partial.replace(gz)
    return {
        kind: {"file": path.name, "size": path.stat().st_size, "digest": _sha256(path)}
        for kind, path in (("tar", tar), ("gzip", gz))
    }


def build(folder: Path | None = None) -> list[Version]:
    """The series, from the cache when it holds the current recipe's, else built (resuming
    after the last version exported by an interrupted build of the same recipe)."""
    folder = folder or cache_dir()
    if (versions := cached(folder)) is not None:
        return versions
    if lacking := missing(folder):
        raise RuntimeError("cannot build the Debian series: " + "; ".join(lacking))
    folder.mkdir(parents=True, exist_ok=True)
    recipe = recipe_hash()
    document = _load(folder)
    if not document or document.get("recipe") != recipe:
        document = {"recipe": recipe, "mirror": MIRROR, "suite": SUITE, "versions": []}
    done: list[dict[str, object]] = document["versions"]  # type: ignore[assignment]
    done = [v for v in done if (folder / v["tar"]["file"]).is_file()]  # type: ignore[index]
    root = folder / "root"
    if root.exists():
        if _mounted(root / "proc"):
            _run(["umount", "-l", str(root / "proc")])
        shutil.rmtree(root)
    started = time.perf_counter()
    if done:
        _progress(f"resuming after {done[-1]['tag']}")
        root.mkdir()
        _run(["tar", "--extract", "--same-owner", "--preserve-permissions", "--numeric-owner",
              f"--file={folder / done[-1]['tar']['file']}", f"--directory={root}"])  # type: ignore[index]  # fmt: skip
    for tag, change, script in RECIPE[len(done) :]:
        _progress(f"{tag}: {change}")
        if tag == "v1":
            _run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR],
                 stdout=subprocess.DEVNULL)  # fmt: skip
        _in_chroot(root, script)
        blobs = _export(root, folder, tag)
        done.append({"tag": tag, "change": change, **blobs})
        document["versions"] = done
        (folder / "series.json").write_text(json.dumps(document, indent=1) + "\n")
        sizes = ", ".join(f"{kind} {blob['size'] / 2**20:.1f} MiB" for kind, blob in blobs.items())  # type: ignore[index]
        _progress(f"{tag}: {sizes} ({time.perf_counter() - started:.0f} s)")
    shutil.rmtree(root)
    versions = cached(folder)
    assert versions is not None
    return versions


def table(versions: list[Version]) -> str:
    lines = [f"{'':4}  {'tar (MiB)':>10}  {'tar.gz (MiB)':>12}  change"]
    for v in versions:
        lines.append(
            f"{v.tag:4}  {v.tar.size / 2**20:10.1f}  {v.gzip.size / 2**20:12.1f}  {v.change}"
        )
    total_tar = sum(v.tar.size for v in versions) / 2**20
    total_gz = sum(v.gzip.size for v in versions) / 2**20
    lines.append(f"{'all':4}  {total_tar:10.1f}  {total_gz:12.1f}")
    return "\n".join(lines)


def main() -> int:
    folder = cache_dir()
    if lacking := missing(folder):
        print("missing, nothing was built:\n  " + "\n  ".join(lacking), file=sys.stderr)
        return 2
    versions = build(folder)
    print(f"{folder} (recipe {recipe_hash()[:12]})")
    print(table(versions))
    return 0
