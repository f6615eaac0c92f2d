"""Errors of the store, each carrying the OCI distribution error code it stands for.

The codes are the spec's vocabulary for what went wrong; which HTTP status goes
with each is the server's business (registry/errors.py), not the store's.
"""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    code = "UNKNOWN"
    message = "unknown error"

    def __init__(self, detail: Any = None, message: str | None = None) -> None:
        self.detail = detail
        if message is not None:
            self.message = message
        super().__init__(f"{self.code}: {self.message}" + (f" ({detail})" if detail else ""))


class NameInvalid(StoreError):
    code = "NAME_INVALID"
    message = "invalid repository name"


class NameUnknown(StoreError):
    code = "NAME_UNKNOWN"
    message = "repository name not known to registry"


class TagInvalid(StoreError):
    code = "TAG_INVALID"
    message = "invalid tag"


class DigestInvalid(StoreError):
    code = "DIGEST_INVALID"
    message = "provided digest did not match uploaded content"


class SizeInvalid(StoreError):
    code = "SIZE_INVALID"
    message = "provided length did not match content length"


class BlobUnknown(StoreError):
    code = "BLOB_UNKNOWN"
    message = "blob unknown to registry"


class BlobUploadUnknown(StoreError):
    code = "BLOB_UPLOAD_UNKNOWN"
    message = "blob upload unknown to registry"


class BlobUploadInvalid(StoreError):
    code = "BLOB_UPLOAD_INVALID"
    message = "blob upload invalid"


class UploadOutOfOrder(BlobUploadInvalid):
    """A chunk that does not start where the upload ends; `size` is where it ends."""

    message = "chunk does not start at the end of the upload"

    def __init__(self, size: int, detail: Any = None) -> None:
        self.size = size
        super().__init__(detail)


class ManifestInvalid(StoreError):
    code = "MANIFEST_INVALID"
    message = "manifest invalid"


class ManifestTooLarge(ManifestInvalid):
    message = "manifest exceeds the size limit"


class RepositoryChanged(StoreError):
    """A repository moved (a push landed) while it was being removed; nothing was."""

    message = "the repository changed while it was being removed; nothing was removed"


class ManifestUnknown(StoreError):
    code = "MANIFEST_UNKNOWN"
    message = "manifest unknown to registry"


class ManifestBlobUnknown(StoreError):
    code = "MANIFEST_BLOB_UNKNOWN"
    message = "manifest references a blob or manifest unknown to the repository"


class Unsupported(StoreError):
    code = "UNSUPPORTED"
    message = "the operation is unsupported"


class StorageFull(StoreError):
    """The registry's filesystem has no room (ENOSPC, EDQUOT), or too little for a write
    whose size is known. OCI has no code for it: UNKNOWN, as Distribution answers, since
    DENIED would make clients say "denied", which reads as an authorization problem."""

    code = "UNKNOWN"
    message = "no space left on the registry's disk"


class GitFailed(StoreError):
    """A git command the store runs (gc, repack, log) failed; the message says how."""

    message = "git failed"


class RefBusy(StoreError):
    """Another writer held a repository's ref lock for longer than a write waits for it
    (storage.refs.LOCK_WAIT_SECONDS): nothing was written; the client may try again."""

    code = "UNAVAILABLE"  # as Distribution's 503s
    message = "the repository is busy with another write; try again"


class Denied(StoreError):
    code = "DENIED"
    message = "requested access to the resource is denied"
