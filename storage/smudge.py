"""`git archive`'s smudge filter for layers stored as files (docs/format.md §10).

Git runs it in the repository, the file's content (a pointer) on stdin, for each path
that `.gitattributes` marks `filter=hroot`, and writes what it prints into the
archive: the layer, rebuilt byte for byte. Anything that is not a pointer passes
through unchanged. storage.repository writes the command (`python -m storage.smudge`)
into the repository's config (`filter.hroot.smudge`), and `filter.hroot.required`, so
that a git without it fails rather than archiving pointers.
"""

from __future__ import annotations

import os
import shutil
import sys

from dulwich.repo import Repo

from storage import objects, pointers
from storage.filestore import FileStore
from storage.layout import ObjectCache


def main() -> int:
    data = sys.stdin.buffer.read(pointers.MAX_SIZE + 1)
    pointer = pointers.parse(data) if len(data) <= pointers.MAX_SIZE else None
    out = sys.stdout.buffer
    if pointer is None:
        out.write(data)
        shutil.copyfileobj(sys.stdin.buffer, out)
        return 0
    repo = Repo(os.environ.get("GIT_DIR", "."))
    try:
        repo.object_store.loose_object_size_limit = 1 << 40  # as Store does
        files = FileStore(repo.object_store, ObjectCache(repo.object_store))
        with files.rebuild(pointer) as layer:
            while chunk := layer.read(objects.CHUNK):
                out.write(chunk)
    finally:
        repo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
