"""Repository names, tags, and their mapping to git branch names (docs/format.md §2)."""

from __future__ import annotations

import re

from storage.errors import NameInvalid, TagInvalid

# The OCI distribution spec's grammar for repository names and tags.
_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

# A ref's file name is the encoded name (+ ".lock" while it is written): keep it within
# the 255 bytes a file name may have, counting the "+" the .lock rule may add.
MAX_NAME_LENGTH = 255 - len(".lock") - 1

BRANCH_PREFIX = b"refs/heads/hroot/"
STAGING_PREFIX = b"refs/hroot/staging/"


def check_name(name: str) -> str:
    """Return `name` if it is a valid OCI repository name, else raise NameInvalid."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(name)
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise TagInvalid(tag)
    return tag


def encode(name: str) -> bytes:
    """`library/alpine` -> `library+alpine`; a trailing `.lock` gets one more `+`."""
    encoded = check_name(name).replace("/", "+")
    if encoded.endswith(".lock"):
        encoded += "+"
    return encoded.encode()


def decode(encoded: bytes) -> str:
    text = encoded.decode()
    if text.endswith("+"):
        text = text[:-1]
    return text.replace("+", "/")


def branch_ref(name: str) -> bytes:
    return BRANCH_PREFIX + encode(name)


def repository(branch: bytes) -> str:
    """The repository name of a branch ref (`refs/heads/hroot/...`)."""
    return decode(branch.removeprefix(BRANCH_PREFIX))


def staging_ref(name: str) -> bytes:
    return STAGING_PREFIX + encode(name)
