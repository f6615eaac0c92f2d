"""index.json of a repository's layout: every manifest, tags as ref.name annotations.

A push rewrites index.json whole (it is one git blob), so with 10,000 tags each push
would parse, edit and re-serialize 10,000 entries. An `Index` keeps each entry with
its serialized text, is edited by copying two dicts, and is cached by the id of the
blob it was read from or written to: a push costs a sort and a join, not a parse.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

from storage.manifests import OCI_INDEX

TAG_ANNOTATION = "org.opencontainers.image.ref.name"

Descriptor = dict[str, Any]


def _order_key(key: str) -> str:
    """Tagged entries first, by tag; then untagged ones, by digest."""
    return ("1" if ":" in key else "0") + key


def _key(descriptor: Descriptor) -> str:
    """An entry's key: its tag, or the digest of an untagged one."""
    tag = descriptor.get("annotations", {}).get(TAG_ANNOTATION)
    return tag if tag is not None else descriptor["digest"]


def _text(descriptor: Descriptor) -> str:
    return json.dumps(descriptor, sort_keys=True, separators=(",", ":"))


class Index:
    """Immutable (encode only fills in the texts it needs); edits return a new Index."""

    def __init__(
        self,
        entries: dict[str, Descriptor],
        counts: dict[str, int],
        order: list[str],
        texts: dict[str, str],
        untexted: list[str],
    ) -> None:
        # key: the tag of a tagged entry, the digest of an untagged one (tags have no ":")
        self._entries = entries
        self._counts = counts  # digest -> how many entries name it
        self._order = order  # "0<tag>" and "1<digest>", sorted: the order of index.json
        self._texts = texts  # the same keys -> each entry's JSON text, once encoded
        self._untexted = untexted  # keys whose text is still to make (a parse makes none)

    @classmethod
    def empty(cls) -> Index:
        return cls({}, {}, [], {}, [])

    @classmethod
    def parse(cls, raw: bytes) -> Index:
        """Entries in one pass and one sort: a first tags list after a restart parses
        10,000 of them, and inserting each in order would move the list every time."""
        entries = {_key(descriptor): descriptor for descriptor in json.loads(raw)["manifests"]}
        counts: dict[str, int] = {}
        for descriptor in entries.values():
            counts[descriptor["digest"]] = counts.get(descriptor["digest"], 0) + 1
        order = sorted(map(_order_key, entries))
        return cls(entries, counts, order, {}, list(order))

    def encode(self) -> bytes:
        """Deterministic: tagged entries by tag, then untagged ones by digest; sorted keys.

        One descriptor per line, each after the first led by its comma (docs/format.md
        §3): `git diff` of two versions shows the tags that moved as the lines that
        changed, and an entry added at the end (an image just left untagged) does not
        touch the line before it.
        """
        for order in self._untexted:
            if order not in self._texts and order[1:] in self._entries:
                self._texts[order] = _text(self._entries[order[1:]])
        self._untexted = []
        manifests = "\n,".join(map(self._texts.__getitem__, self._order))
        if manifests:
            manifests = "\n" + manifests
        return (
            f'{{"manifests":[{manifests}\n],"mediaType":"{OCI_INDEX}","schemaVersion":2}}\n'
        ).encode()

    def __len__(self) -> int:
        return len(self._entries)

    def tags(self) -> list[str]:
        return [k[1:] for k in self._order[: bisect.bisect_left(self._order, "1")]]

    def find(self, reference: str) -> Descriptor | None:
        """The entry of a tag, or an entry of a digest."""
        found = self._entries.get(reference)
        if found is None and reference in self._counts:
            found = next(d for d in self._entries.values() if d["digest"] == reference)
        return found

    def manifests(self) -> list[Descriptor]:
        """One entry per manifest, whatever its tags."""
        seen: dict[str, Descriptor] = {}
        for descriptor in self._entries.values():
            seen.setdefault(descriptor["digest"], descriptor)
        return list(seen.values())

    def tags_of(self, digest: str) -> list[str]:
        if digest not in self._counts:
            return []
        return sorted(k for k, d in self._entries.items() if d["digest"] == digest and ":" not in k)

    def with_tag(self, tag: str, descriptor: Descriptor) -> Index:
        """`tag` on this manifest; the manifest it named before stays, untagged if need be."""
        new = self.without_tag(tag)
        new._remove(descriptor["digest"])
        new._add({**descriptor, "annotations": {TAG_ANNOTATION: tag}})
        return new

    def with_manifest(self, descriptor: Descriptor) -> Index:
        """The manifest, untagged, unless it is already here."""
        if descriptor["digest"] in self._counts:
            return self
        new = self._copy()
        new._add(descriptor)
        return new

    def without_tag(self, tag: str) -> Index:
        new = self._copy()
        found = new._remove(tag)
        if found is not None and found["digest"] not in new._counts:
            new._add({k: v for k, v in found.items() if k != "annotations"})
        return new

    def without_manifest(self, digest: str) -> Index:
        return self.without_manifests({digest})

    def without_manifests(self, digests: set[str]) -> Index:
        """These manifests gone, with every tag on them (one copy for all of them)."""
        new = self._copy()
        for key in [k for k, d in self._entries.items() if d["digest"] in digests]:
            new._remove(key)
        return new

    def _copy(self) -> Index:
        return Index(
            dict(self._entries),
            dict(self._counts),
            list(self._order),
            dict(self._texts),
            list(self._untexted),
        )

    def _add(self, descriptor: Descriptor) -> None:
        key = _key(descriptor)
        self._remove(key)
        self._entries[key] = descriptor
        order = _order_key(key)
        bisect.insort(self._order, order)
        self._untexted.append(order)
        self._counts[descriptor["digest"]] = self._counts.get(descriptor["digest"], 0) + 1

    def _remove(self, key: str) -> Descriptor | None:
        found = self._entries.pop(key, None)
        if found is None:
            return None
        order = _order_key(key)
        del self._order[bisect.bisect_left(self._order, order)]
        self._texts.pop(order, None)
        digest = found["digest"]
        self._counts[digest] -= 1
        if not self._counts[digest]:
            del self._counts[digest]
        return found
