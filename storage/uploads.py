"""Uploads in progress: spool files under `<gitdir>/hroot/uploads/` (DESIGN.md §2.5).

Not git objects: a crash leaves at worst an abandoned spool, never a broken ref.
The sha256 of what was received is kept in memory as the bytes arrive, so the
usual finish needs no extra pass to check the digest; after a restart (or for a
sha512 digest) the check happens while the git object is written instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage import objects
from storage.digests import Digest
from storage.errors import BlobUploadInvalid, BlobUploadUnknown, DigestInvalid, UploadOutOfOrder
from storage.types import UploadWriter

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class _Received:
    """The sha256 of the first `size` bytes of an upload."""

    size: int
    sha256: hashlib._Hash


class Uploads:
    def __init__(self, root: Path, objects_dir: Path) -> None:
        self._root = root
        self._objects_dir = objects_dir
        self._received: dict[str, _Received] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def start(self, repo: str) -> str:
        upload_id = uuid.uuid4().hex
        folder = self._root / upload_id
        folder.mkdir()
        (folder / "repo").write_text(repo)
        (folder / "data").touch()
        with self._lock:
            self._received[upload_id] = _Received(0, hashlib.sha256())
        return upload_id

    def size(self, repo: str, upload_id: str) -> int:
        return self._data(repo, upload_id).stat().st_size

    def open(self, repo: str, upload_id: str, offset: int | None) -> SpoolWriter:
        file = self._locked(repo, upload_id, "ab")
        size = file.tell()
        if offset is not None and offset != size:
            file.close()
            raise UploadOutOfOrder(size, f"chunk starts at {offset}, upload ends at {size}")
        with self._lock:
            received = self._received.get(upload_id)
        if received is not None and received.size != size:
            received = None
        return SpoolWriter(self, upload_id, file, size, received)

    def finish(self, repo: str, upload_id: str, digest: Digest) -> tuple[bytes, int]:
        """Write the upload as a git object if `digest` matches; (object id, size)."""
        with self._locked(repo, upload_id, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            with self._lock:
                received = self._received.get(upload_id)
            check: Digest | None = digest
            if received is not None and received.size == size and digest.algorithm == "sha256":
                if not digest.matches(received.sha256):
                    self.cancel(repo, upload_id)
                    raise DigestInvalid(str(digest))
                check = None
            try:
                oid = objects.write_blob(self._objects_dir, file.read, size, check)
            except Exception:
                self.cancel(repo, upload_id)
                raise
        self.cancel(repo, upload_id)
        return oid.encode(), size

    def cancel(self, repo: str, upload_id: str) -> None:
        self._data(repo, upload_id)
        with self._lock:
            self._received.pop(upload_id, None)
        shutil.rmtree(self._root / upload_id, ignore_errors=True)

    def _remember(self, upload_id: str, received: _Received | None) -> None:
        with self._lock:
            if received is None:
                self._received.pop(upload_id, None)
            else:
                self._received[upload_id] = received

    def _data(self, repo: str, upload_id: str) -> Path:
        folder = self._root / upload_id if _UPLOAD_ID.fullmatch(upload_id) else None
        try:
            if folder is None or (folder / "repo").read_text() != repo:
                raise BlobUploadUnknown(upload_id)
        except FileNotFoundError:
            raise BlobUploadUnknown(upload_id) from None
        return folder / "data"

    def _locked(self, repo: str, upload_id: str, mode: str) -> BinaryIO:
        """The spool file, opened and exclusively locked: one writer per upload."""
        file = open(self._data(repo, upload_id), mode)  # noqa: SIM115 (caller closes)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise BlobUploadInvalid(
                upload_id, message="upload is in use by another request"
            ) from None
        file.seek(0, os.SEEK_END if "a" in mode else os.SEEK_SET)
        return file


class SpoolWriter(UploadWriter):
    def __init__(
        self,
        uploads: Uploads,
        upload_id: str,
        file: BinaryIO,
        size: int,
        received: _Received | None,
    ) -> None:
        self.upload_id = upload_id
        self.size = size
        self._uploads = uploads
        self._file = file
        self._received = received

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)
        if self._received is not None:
            self._received.sha256.update(data)
            self._received.size = self.size

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        self._uploads._remember(self.upload_id, self._received)
