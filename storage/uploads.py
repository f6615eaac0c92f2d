"""Uploads in progress: spool files under `<gitdir>/hroot/uploads/` (docs/format.md §5).

Not git objects yet: a crash leaves at worst an abandoned spool, never a broken ref.
Each spool is written in the layout of a loose git object (objects.new_spool), so
finishing an upload reads it once and renames it into the object store. What was
received is tallied in memory as it arrives (size, sha256), so the usual finish
checks the digest with no extra work; after a restart, or in another process, the
spool itself is scanned instead.

A git id hashes the blob's size first, which an upload learns only at its end. When
the first write says how many bytes it brings (a Content-Length), the git id is
hashed as they arrive for a blob of that size; if that is what the upload ends as,
as with skopeo and podman, finishing it needs no read at all (a second of a 1 GiB
push). Unless it begins as a tar that will be stored as files (storage.filestore),
which needs no whole id: the hashing is then left for the rare tar that is not.

An upload that is an uncompressed tar may be stored as files instead (storage.filestore),
if it is stored right; the spool then goes, as it does when it is renamed. Such an
upload is taken apart as it arrives (docs/format.md §10): each write feeds the
upload's split, in the thread that writes the spool, and the split's own hash of the
bytes takes the place of the sha256 here. Finishing it then only installs the split's
pack: the push of a 270 MB layer waits for a pass over the bytes git did not have,
not for a split of all of them. A split that is given up leaves the upload to be stored
whole, its spool hashed at the end as after a restart.

An upload belongs to the repository it was opened for: under any other name its id
is unknown. Callers may give a `lifetime` in seconds: an upload opened longer ago
than that is unknown too, and its spool goes on that use (gc removes spools only
once they are idle, however old).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage import deflate, filestore, objects, space
from storage.digests import Digest
from storage.errors import BlobUploadInvalid, BlobUploadUnknown, DigestInvalid, UploadOutOfOrder
from storage.types import UploadWriter

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class _Received:
    """What a spool of `length` bytes on disk holds: `size` bytes whose sha256 is known,
    their git id so far if the upload is expected to end at `git_id.size` bytes, and the
    split of a tar taken apart as it arrives (`whole` once that was given up)."""

    length: int
    size: int
    sha256: hashlib._Hash | None
    git_id: objects.BlobHashes | None = None
    split: filestore.Splitting | None = None
    whole: bool = False
    touched: float = 0.0  # time.monotonic() when a request last wrote to it


_LOCK_WAIT_SECONDS = 1.0  # for a spool's lock (Uploads._locked)
# Uploads taken apart as they arrive, at most, at once: each holds a pack being written
# and some MiB of pieces; another waits for its end to be split, as a restarted one does.
_LIVE_SPLITS = 4
_IDLE_SPLIT_SECONDS = 30.0  # an upload sent nothing for this long: its live split may go


class Uploads:
    def __init__(self, root: Path, objects_dir: Path, files: filestore.FileStore) -> None:
        self.root = root
        self._objects_dir = objects_dir
        self._files = files
        self._received: dict[str, _Received] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def start(self, repo: str) -> str:
        upload_id = uuid.uuid4().hex
        folder = self.root / upload_id
        try:
            folder.mkdir()
            (folder / "repo").write_text(repo)
            objects.new_spool(folder / "data")
        except OSError:  # a full disk: leave no half-made upload behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._remember(upload_id, _Received(objects.SPOOL_PREFIX, 0, hashlib.sha256()))
        return upload_id

    def size(self, repo: str, upload_id: str, lifetime: float | None = None) -> int:
        with open(self._data(repo, upload_id, lifetime), "rb") as spool:
            return self._tally(upload_id, spool).size

    def open(
        self,
        repo: str,
        upload_id: str,
        offset: int | None,
        length: int | None,
        lifetime: float | None = None,
    ) -> SpoolWriter:
        spool = self._locked(self._data(repo, upload_id, lifetime), upload_id)
        received = self._tally(upload_id, spool)
        if offset is not None and offset != received.size:
            spool.close()
            raise UploadOutOfOrder(
                received.size, f"chunk at {offset}, upload ends at {received.size}"
            )
        if not received.size and received.sha256 is not None:
            received.git_id = objects.BlobHashes(length) if length else None
        spool.truncate(received.length)  # drops a block a crash cut short
        spool.seek(received.length)
        return SpoolWriter(self, upload_id, spool, received)

    def finish(
        self, repo: str, upload_id: str, digest: Digest, lifetime: float | None = None
    ) -> tuple[bytes, int]:
        """Make the upload a git object if `digest` matches, or a layer stored as files;
        (object id, bytes written)."""
        path = self._data(repo, upload_id, lifetime)
        try:
            with self._locked(path, upload_id) as spool:
                received = self._tally(upload_id, spool)
                spool.truncate(received.length)
                checked = received.sha256 is not None and digest.algorithm == "sha256"
                if checked:
                    if not digest.matches(received.sha256):  # type: ignore[arg-type]
                        raise DigestInvalid(str(digest))
                    hashes = received.git_id  # the digest was checked as the bytes came in
                    if hashes is None or hashes.size != received.size:
                        hashes = objects.BlobHashes(received.size)
                else:
                    hashes = objects.BlobHashes(received.size, digest)
                stored = None if received.whole else self._as_files(spool, received, digest)
                if stored is not None:
                    hashes.close()
                    return stored.oid, stored.written
                oid = objects.install_spool(self._objects_dir, spool, path, hashes)
        finally:
            self.cancel(repo, upload_id)
        return oid.encode(), received.size

    def _as_files(
        self, spool: BinaryIO, received: _Received, digest: Digest
    ) -> filestore.Stored | None:
        """The upload stored as files, if it is a tar that can be (storage.filestore): by
        the split that took it apart as it arrived, or else by one over the spool."""
        split, received.split = received.split, None
        if split is not None and (split.size, split.algorithm) == (received.size, digest.algorithm):
            return self._files.finish(split, digest)
        if split is not None:
            split.close()
        return self._files.store(_spooled(spool), received.size, digest)

    def _live_split(self) -> filestore.Splitting | None:
        """A split for an upload that begins as a tar, unless _LIVE_SPLITS are under way
        and none of them sat idle long enough to give way."""
        with self._lock:
            live = [(key, received) for key, received in self._received.items() if received.split]
        if len(live) >= _LIVE_SPLITS:
            idle = time.monotonic() - _IDLE_SPLIT_SECONDS
            if not any(received.touched < idle and self._end_split(key) for key, received in live):
                return None
        return self._files.splitting()

    def _end_split(self, upload_id: str) -> bool:
        """Give up upload `upload_id`'s live split, unless a request is in the upload (its
        spool locked): it will be split from its spool when it ends. Whether it went."""
        try:
            spool = open(self.root / upload_id / "data", "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:  # gone (gc removed it): nothing will use it again
            self._remember(upload_id, None)
            return True
        with spool:
            try:
                fcntl.flock(spool.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            with self._lock:
                received = self._received.get(upload_id)
            if received is not None and received.split is not None:
                received.split.close()
                received.split = None
        return True

    def close(self) -> None:
        """Give up every live split (the store is closing: no request is under way)."""
        with self._lock:
            received, self._received = list(self._received.values()), {}
        for each in received:
            if each.split is not None:
                each.split.close()

    def cancel(self, repo: str, upload_id: str, lifetime: float | None = None) -> None:
        self._data(repo, upload_id, lifetime)
        self.cancel_dropped(upload_id)

    def cancel_dropped(self, upload_id: str) -> None:
        """Forget upload `upload_id` and remove its folder (its id checked already)."""
        self._remember(upload_id, None)
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    def _tally(self, upload_id: str, spool: BinaryIO) -> _Received:
        """What the spool holds: from memory if it matches the file, else by scanning it."""
        length = os.fstat(spool.fileno()).st_size
        with self._lock:
            received = self._received.get(upload_id)
        if received is not None and received.length == length:
            return received
        size, end = deflate.scan_stored_blocks(spool, objects.SPOOL_PREFIX)
        return _Received(end, size, None)

    def _remember(self, upload_id: str, received: _Received | None) -> None:
        """Keep (or with None forget) what upload `upload_id` received; the live split of
        what it replaces, if another, is given up."""
        with self._lock:
            if received is None:
                replaced = self._received.pop(upload_id, None)
            else:
                replaced = self._received.get(upload_id)
                self._received[upload_id] = received
        if replaced is not None and replaced is not received and replaced.split is not None:
            replaced.split.close()

    def _data(self, repo: str, upload_id: str, lifetime: float | None = None) -> Path:
        """The spool of `repo`'s upload `upload_id`, if it has one opened within `lifetime`
        seconds; one older than that is removed. Another repository's is left as it is."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise BlobUploadUnknown(upload_id)
        folder = self.root / upload_id
        try:
            with open(folder / "repo") as owner:  # written once, when the upload began
                if owner.read() != repo:
                    raise BlobUploadUnknown(upload_id)
                opened = os.fstat(owner.fileno()).st_mtime
        except FileNotFoundError:
            raise BlobUploadUnknown(upload_id) from None
        if lifetime is not None and time.time() - opened > lifetime:
            self.cancel_dropped(upload_id)
            raise BlobUploadUnknown(upload_id, message=f"blob upload expired after {lifetime:g} s")
        return folder / "data"

    def _locked(self, data: Path, upload_id: str) -> BinaryIO:
        """The spool, opened and exclusively locked: one writer per upload.

        A lock that another request holds is waited for a moment before it counts as in
        use: a process forked meanwhile by another thread (gc's git, `git gc --auto`)
        shares the spool the last writer just closed, and with it that writer's lock,
        until it execs. Under load that was long enough to refuse the next request.
        """
        spool = open(data, "r+b")  # noqa: SIM115 (caller closes)
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(spool.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return spool
            except BlockingIOError:
                if time.monotonic() > deadline:
                    spool.close()
                    raise BlobUploadInvalid(
                        upload_id, message="upload is in use by another request"
                    ) from None
                time.sleep(0.01)


def _spooled(spool: BinaryIO) -> Callable[[int], bytearray]:
    """A reader of the spool's bytes, from the first."""
    spool.seek(objects.SPOOL_PREFIX)
    return deflate.StoredBlocks(spool).read


class SpoolWriter(UploadWriter):
    def __init__(
        self, uploads: Uploads, upload_id: str, spool: BinaryIO, received: _Received
    ) -> None:
        self.upload_id = upload_id
        self.size = received.size
        self._uploads = uploads
        self._spool = spool
        self._received = received
        self._writeback = objects.Writeback(spool)

    def write(self, data: bytes) -> None:
        """Append `data`; on a full disk the whole upload is dropped, freeing its spool:
        the client gets StorageFull and starts a new upload once there is room."""
        try:
            objects.append_spool(self._spool, data)
            # The spool of a tar taken apart as it arrives is removed once its pack is in,
            # unsynced: writing it to disk as it came competed with the pack's own writes
            # (the Debian series pushed in 11.0 s against 11.7). Should the split be given
            # up, the next write starts the writeback of all of it.
            if self._received.split is None:
                self._writeback.wrote()
        except OSError as exc:
            self._drop_if_full(exc)
            raise
        self.size += len(data)
        received = self._received
        if self.size == len(data):
            self._first(data)
        if received.split is not None:
            self._split(data)
        if received.sha256 is not None:
            received.sha256.update(data)
        if received.git_id is not None:
            if self.size <= received.git_id.size:
                received.git_id.update(data)
            else:  # longer than expected: the size hashed first was wrong
                received.git_id.close()
                received.git_id = None

    def _first(self, data: bytes) -> None:
        """An upload's first bytes: if they begin a tar, it is to be stored as files, so its
        whole git id is not needed; and if it can be taken apart as it arrives, the split
        hashes its bytes as the digest check, in place of the sha256 here."""
        received = self._received
        expected = received.git_id.size if received.git_id is not None else None
        if not filestore.may_split(expected, data):
            return
        received.git_id = None
        received.split = self._uploads._live_split()
        if received.split is not None:
            received.sha256 = None

    def _split(self, data: bytes) -> None:
        """Feed the live split; once it is given up, the upload is stored whole."""
        received = self._received
        try:
            fed = received.split is not None and received.split.feed(data)
        except OSError:  # the disk: the spool's own writes say so if it is full
            fed = False
        if not fed:
            received.split, received.whole = None, True

    def close(self) -> None:
        if self._spool.closed:
            return
        if self._received.git_id is not None:
            self._received.git_id.close()  # no hashing thread waits between requests
        try:
            self._spool.flush()
        except OSError as exc:
            self._drop_if_full(exc)
            raise
        self._received.size = self.size
        self._received.length = self._spool.tell()
        self._received.touched = time.monotonic()
        self._spool.close()
        self._uploads._remember(self.upload_id, self._received)

    def _drop_if_full(self, exc: OSError) -> None:
        """On a full disk, close the spool (its unwritable buffer lost) and cancel the
        upload, and raise StorageFull; any other error is left to the caller."""
        if not space.is_full(exc):
            return
        if self._received.git_id is not None:
            self._received.git_id.close()
        with contextlib.suppress(OSError):
            self._spool.close()  # flushes again, fails again, but closes the file
        self._uploads.cancel_dropped(self.upload_id)
        raise space.full(self._uploads.root) from exc
