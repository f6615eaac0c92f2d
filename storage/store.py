"""The public API of the git-backed image store (CONTRACT: signatures fixed, bodies being written)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


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


class BlobReader:
    """An open blob: `size` is the whole blob's length; read() streams from `offset` on."""

    size: int

    def read(self, n: int) -> bytes:  # b"" at the end
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


class Store:
    """One registry in one bare git repository. Every method is blocking and thread-safe."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, create: bool = True) -> Store:
        raise NotImplementedError

    # --- listings ---------------------------------------------------------
    def repositories(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Repository names, sorted; at most n after `last`."""
        raise NotImplementedError

    def tags(self, repo: str, n: int | None = None, last: str | None = None) -> list[str]:
        """Tags of repo, sorted; at most n after `last`. NameUnknown if repo has no branch."""
        raise NotImplementedError

    # --- blobs ------------------------------------------------------------
    def stat_blob(self, repo: str, digest: str) -> BlobInfo:
        raise NotImplementedError

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> BlobReader:
        raise NotImplementedError

    def put_blob(
        self, repo: str, digest: str, stream: BinaryIO, size: int | None = None
    ) -> BlobInfo:
        """Write a whole blob from a file-like object in one pass and stage it."""
        raise NotImplementedError

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> BlobInfo | None:
        """Link from_repo's blob into repo; None when from_repo does not have it."""
        raise NotImplementedError

    def delete_blob(self, repo: str, digest: str) -> None:
        raise NotImplementedError

    # --- uploads ----------------------------------------------------------
    def start_upload(self, repo: str) -> str:
        raise NotImplementedError

    def upload_size(self, repo: str, upload_id: str) -> int:
        raise NotImplementedError

    def open_upload(self, repo: str, upload_id: str, offset: int | None = None) -> UploadWriter:
        """Open for appending; UploadOutOfOrder if `offset` is given and is not the end."""
        raise NotImplementedError

    def finish_upload(self, repo: str, upload_id: str, digest: str) -> BlobInfo:
        raise NotImplementedError

    def cancel_upload(self, repo: str, upload_id: str) -> None:
        raise NotImplementedError

    # --- manifests --------------------------------------------------------
    def put_manifest(
        self, repo: str, reference: str, body: bytes, media_type: str | None = None
    ) -> Manifest:
        raise NotImplementedError

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        raise NotImplementedError

    def delete_manifest(self, repo: str, digest: str) -> None:
        raise NotImplementedError

    def delete_tag(self, repo: str, tag: str) -> None:
        raise NotImplementedError

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> dict:
        """An OCI image index (as a dict) of the manifests whose subject is `digest`."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
