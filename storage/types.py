"""The values and handles the store's API hands out (see store.Store)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes
    subject: str | None  # digest of the manifest's `subject`, for the OCI-Subject header


@dataclass(frozen=True)
class Committed:
    """A commit the store made on a repository's branch (docs/format.md §4): its id, first
    line and trailers, told to Store.on_commit listeners once the branch points past it."""

    repository: str
    commit: str  # hex id
    summary: str
    trailers: tuple[tuple[str, str], ...]

    def trailer(self, key: str) -> str | None:
        """The first value of trailer `key`, if the commit has one."""
        return next((value for k, value in self.trailers if k == key), None)


@dataclass(frozen=True)
class Removed:
    """What Store.remove took away: the branch at `commit`, whether blobs were staged,
    how many uploads were in progress."""

    repository: str
    commit: str
    staged: bool
    uploads: int


class BlobReader:
    """An open blob: `size` is the whole blob's length; read() streams it from the start,
    or from wherever skip() moved to."""

    size: int

    def read(self, n: int) -> bytes | bytearray:
        """Up to n bytes; empty at the end."""
        raise NotImplementedError

    def skip(self, n: int) -> None:
        """Move n bytes forward without reading them (a byte range's start)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UploadWriter:
    """An upload opened for appending; one writer per upload at a time."""

    upload_id: str
    size: int  # bytes received so far

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> UploadWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
