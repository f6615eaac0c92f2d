"""hroot's git-backed image store: a whole registry in one bare git repository (no HTTP here)."""

from storage import repository
from storage.errors import StoreError
from storage.store import BlobInfo, BlobReader, Manifest, Store, UploadWriter

__all__ = [
    "BlobInfo",
    "BlobReader",
    "Manifest",
    "Store",
    "StoreError",
    "UploadWriter",
    "repository",
]
