"""Which paths are hroot's to open, and opening them: create, adopt, upgrade (docs/format.md §1).

A repository is a registry because of its `hroot/*` branches, as in dex: a bare
repository that has them and no `hroot.format` (a `git clone --mirror`, a restored
backup, one that fetched them) is adopted on open. Anything else that is not hroot's
own is refused before a byte is written there.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from dulwich.config import ConfigFile
from dulwich.file import FileLocked
from dulwich.repo import Repo

from storage.errors import StoreError
from storage.names import BRANCH_PREFIX

log = logging.getLogger("hroot.storage")

FORMAT = 3  # docs/format.md §6 lists what each format changed

# Settings of a new or adopted repository, so that `git gc` (hroot's own or a person's)
# stays cheap: blobs over 8 MiB (layers) are neither delta-searched nor recompressed
# (80 s -> 2 s on 500 MiB of layers), while index.json and trees under 8 MiB (up to
# some 35,000 tags) are stored as deltas: 6,000 tags' history, 1.9 GB loose -> 19 MB.
# Adoption leaves a setting the owner already chose alone.
_SETTINGS = {
    (b"core",): {b"bigFileThreshold": b"8388608"},
    (b"pack",): {b"compression": b"0"},
}


class RepositoryRefused(StoreError):
    """A path hroot will not serve or write to; the message says what it is and what to do."""

    message = "not a repository hroot can use"

    def __str__(self) -> str:
        return f"{self.detail}: {self.message}"


class Action(Enum):
    CREATE = "create"  # nothing there yet (or an empty folder)
    OPEN = "open"  # hroot's own, this format or an older one (upgraded on open)
    ADOPT = "adopt"  # a bare repository with hroot/ branches and no format marker


def check(path: Path) -> Action:
    """What opening `path` would do; RepositoryRefused if it is not hroot's to use.

    Reads only: nothing is created or changed, whatever the answer.
    """
    if not path.exists():
        return Action.CREATE
    if not path.is_dir():
        raise _refused(path, "is a file, not a git repository: give a new path")
    if not any(path.iterdir()):
        return Action.CREATE
    if (path / ".git").exists():
        raise _refused(
            path,
            "is the work tree of a git repository; hroot keeps a registry in a bare "
            "repository of its own: give a new path",
        )
    if not ((path / "objects").is_dir() and (path / "HEAD").is_file()):
        raise _refused(
            path,
            "is a folder that is not empty and not a git repository: give an empty or "
            "new path, or an hroot repository",
        )
    config = _read_config(path)
    _check_dulwich_reads(path)
    if not _is_bare(config):
        raise _refused(
            path,
            "is the .git folder of an ordinary (non-bare) repository: give a new path, or "
            "`git clone --mirror` it and serve the clone",
        )
    found = _format(config, path)
    if found is not None:
        if found > FORMAT:
            raise _refused(
                path,
                f"is an hroot repository of format {found}, newer than this hroot "
                f"(format {FORMAT}): upgrade hroot",
            )
        return Action.OPEN
    if _has_refs(path, BRANCH_PREFIX) or not _has_refs(path, b"refs/"):
        return Action.ADOPT
    raise _refused(
        path,
        "is a git repository with no hroot/ branches: hroot will not write into it; "
        "give a new path",
    )


def open_repo(path: Path, create: bool = True) -> Repo:
    """Open the registry at `path`: create, adopt or upgrade it as `check` says.

    FileNotFoundError when there is none and `create` is false.
    """
    action = check(path)
    if action is Action.CREATE:
        if not create:
            raise FileNotFoundError(path)
        path.mkdir(parents=True, exist_ok=True)
        Repo.init_bare(str(path)).close()
        _write_settings(path, overwrite=True)
        log.info("created the registry %s (format %d)", path, FORMAT)
    elif action is Action.ADOPT:
        _write_settings(path, overwrite=False)
        log.info("adopted %s as a registry: wrote hroot.format = %d and its settings", path, FORMAT)
    else:
        _upgrade(path)
    _write_filter(path)
    return Repo(str(path))


def describe(error: BaseException) -> str:
    """One line for a person: what went wrong, without the OCI error code."""
    if isinstance(error, RepositoryRefused):
        return str(error)
    if isinstance(error, StoreError):
        return f"{error.message} ({error.detail})" if error.detail else error.message
    return str(error)


def _upgrade(path: Path) -> None:
    """Bring a repository of an older format to FORMAT, one step at a time."""
    found = _format(_read_config(path), path)
    assert found is not None
    while found < FORMAT:
        _UPGRADES[found](path)
        found += 1
        _set_format(path, found)
        log.info("upgraded the registry %s to format %d", path, found)


def _to_format_2(path: Path) -> None:
    """Format 2 writes index.json one descriptor per line. Nothing to rewrite: readers
    parse both forms, and each branch's next commit writes the new one."""


def _to_format_3(path: Path) -> None:
    """Format 3 may store uncompressed tar layers as files (§10). Nothing to rewrite:
    every layer stored so far stays whole, which format 3 reads as it is; the smudge
    filter that `git archive` needs is written on every open (_write_filter)."""


_UPGRADES: dict[int, Callable[[Path], None]] = {1: _to_format_2, 2: _to_format_3}


def _write_filter(path: Path) -> None:
    """Point `filter.hroot` at the running hroot (docs/format.md §10), unless it does:
    `git archive` runs it to rebuild layers stored as files. A config another process
    is writing this moment is left to it; it writes the same or its own hroot."""
    config = _read_config(path)
    wanted = {b"smudge": _smudge_command().encode(), b"required": b"true"}
    section = (b"filter", b"hroot")
    if all(_has(config, section, k) and config.get(section, k) == v for k, v in wanted.items()):
        return
    for key, value in wanted.items():
        config.set(section, key, value)
    try:
        config.write_to_path()
    except FileLocked:
        log.info("did not write filter.hroot into %s: its config is being written", path)


def _smudge_command() -> str:
    """storage.smudge for this hroot, as git runs it (through the shell)."""
    root = shlex.quote(str(Path(__file__).resolve().parent.parent))
    return f"PYTHONPATH={root} {shlex.quote(sys.executable)} -m storage.smudge"


def _write_settings(path: Path, overwrite: bool) -> None:
    config = _read_config(path)
    for section, values in _SETTINGS.items():
        for key, value in values.items():
            if overwrite or not _has(config, section, key):
                config.set(section, key, value)
    config.set((b"hroot",), b"format", str(FORMAT).encode())
    config.write_to_path()


def _set_format(path: Path, value: int) -> None:
    config = _read_config(path)
    config.set((b"hroot",), b"format", str(value).encode())
    config.write_to_path()


def _read_config(path: Path) -> ConfigFile:
    try:
        return ConfigFile.from_path(str(path / "config"))
    except FileNotFoundError:
        raise _refused(path, "is a git repository without a config file") from None
    except ValueError as error:
        raise _refused(path, f"has a git config that cannot be parsed ({error})") from None


def _check_dulwich_reads(path: Path) -> None:
    """Open it once as dulwich will: git takes `core.bigFileThreshold = 8m`, dulwich
    reads only a plain number of bytes there."""
    try:
        Repo(str(path)).close()
    except ValueError as error:
        raise _refused(
            path, f"has a git config dulwich cannot read ({error}); write sizes in bytes"
        ) from None


def _has(config: ConfigFile, section: tuple[bytes, ...], key: bytes) -> bool:
    try:
        config.get(section, key)
    except KeyError:
        return False
    return True


def _is_bare(config: ConfigFile) -> bool:
    try:
        return config.get_boolean((b"core",), b"bare", False)
    except ValueError:
        return False


def _format(config: ConfigFile, path: Path) -> int | None:
    try:
        value = config.get((b"hroot",), b"format")
    except KeyError:
        return None
    if not value.isdigit():
        raise _refused(path, f"has hroot.format = {value.decode(errors='replace')!r}")
    return int(value)


def _has_refs(path: Path, prefix: bytes) -> bool:
    """Whether any ref starts with `prefix`, loose or packed (no object is read)."""
    loose = path / prefix.decode()
    if loose.is_dir() and any(p.is_file() for p in loose.rglob("*")):
        return True
    packed = path / "packed-refs"
    if packed.is_file():
        for line in packed.read_bytes().splitlines():
            fields = line.split(b" ", 1)
            if len(fields) == 2 and fields[1].startswith(prefix):
                return True
    return False


def _refused(path: Path, what: str) -> RepositoryRefused:
    return RepositoryRefused(str(path), message=what)
