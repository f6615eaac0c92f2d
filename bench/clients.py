"""The clients that drive the registries: skopeo, and an asyncio OCI distribution client.

The HTTP client talks as docker and skopeo do: blobs go up with `POST uploads/` and a
monolithic `PUT ?digest=` (or a cross-repository mount), manifests with `PUT`, and a
pull reads every byte of every blob and checks its digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path

import aiohttp
from yarl import URL

from bench.commands import output
from bench.images import CHUNK, MANIFEST_TYPE, Descriptor, Image

MANIFEST_TYPES = ", ".join(
    [
        MANIFEST_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)


class ClientError(RuntimeError):
    pass


async def skopeo_copy(source: str, destination: str) -> None:
    await output(
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        source,
        destination,
        error=ClientError,
    )


async def _check(response: aiohttp.ClientResponse, *expected: int) -> None:
    if response.status not in expected:
        body = (await response.read())[:500].decode(errors="replace")
        raise ClientError(f"{response.method} {response.url.path_qs}: {response.status} {body}")


class RegistryClient:
    """The distribution API of one registry, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = URL(base)

    def url(self, path: str) -> URL:
        return self.base.join(URL(path))

    async def upload_blob(
        self, repo: str, blob: Descriptor, source: Path | bytes, mount_from: str | None = None
    ) -> None:
        """Uploads a blob, unless mounting it from `mount_from` succeeds (201)."""
        params = {"mount": blob.digest, "from": mount_from} if mount_from else {}
        async with self.session.post(
            self.url(f"/v2/{repo}/blobs/uploads/"), params=params
        ) as response:
            await _check(response, 201, 202)
            if response.status == 201:
                return
            location = self.url(response.headers["Location"])
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        location = location.update_query({"digest": blob.digest})
        body = source.open("rb") if isinstance(source, Path) else nullcontext(source)
        with body as data:
            async with self.session.put(location, data=data, headers=headers) as response:
                await _check(response, 201)

    async def has_blob(self, repo: str, digest: str) -> bool:
        async with self.session.head(self.url(f"/v2/{repo}/blobs/{digest}")) as response:
            await _check(response, 200, 404)
            return response.status == 200

    async def put_manifest(self, repo: str, reference: str, body: bytes) -> None:
        async with self.session.put(
            self.url(f"/v2/{repo}/manifests/{reference}"),
            data=body,
            headers={"Content-Type": MANIFEST_TYPE},
        ) as response:
            await _check(response, 201)

    async def push_image(self, repo: str, image: Image, tag: str | None = None) -> None:
        """Pushes the blobs the registry lacks, then the manifest under `tag` (by default
        the image's own)."""
        for blob in image.blobs:
            if not await self.has_blob(repo, blob.digest):
                await self.upload_blob(repo, blob, image.blob_file(blob))
        await self.put_manifest(repo, tag or image.tag, image.manifest)

    async def head_manifest(self, repo: str, reference: str) -> str:
        async with self.session.head(
            self.url(f"/v2/{repo}/manifests/{reference}"), headers={"Accept": MANIFEST_TYPES}
        ) as response:
            await _check(response, 200)
            return response.headers["Docker-Content-Digest"]

    async def get_manifest(self, repo: str, reference: str) -> bytes:
        async with self.session.get(
            self.url(f"/v2/{repo}/manifests/{reference}"), headers={"Accept": MANIFEST_TYPES}
        ) as response:
            await _check(response, 200)
            return await response.read()

    async def pull_blob(self, repo: str, blob: dict[str, object]) -> int:
        """Reads a whole blob, checking its size and digest; returns its size."""
        digest = hashlib.sha256()
        size = 0
        async with self.session.get(self.url(f"/v2/{repo}/blobs/{blob['digest']}")) as response:
            await _check(response, 200)
            async for chunk in response.content.iter_chunked(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if "sha256:" + digest.hexdigest() != blob["digest"] or size != blob["size"]:
            raise ClientError(
                f"{repo}: blob {blob['digest']} came back as "
                f"sha256:{digest.hexdigest()}, {size} bytes"
            )
        return size

    async def pull_image(self, repo: str, tag: str) -> int:
        """Pulls a tag as docker does, reading every blob; returns the bytes read."""
        digest = await self.head_manifest(repo, tag)
        body = await self.get_manifest(repo, digest)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise ClientError(f"{repo}:{tag}: manifest does not match {digest}")
        manifest = json.loads(body)
        total = len(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            total += await self.pull_blob(repo, blob)
        return total

    async def _paged(self, path: str, key: str, n: int | None) -> list[str]:
        """Follows `Link: <…>; rel="next"` from the first page to the last."""
        items: list[str] = []
        url: URL | None = self.url(path).with_query({"n": n} if n else {})
        while url is not None:
            async with self.session.get(url) as response:
                await _check(response, 200)
                items += (await response.json())[key] or []
                link = response.links.get("next")
            url = self.url(str(link["url"])) if link else None
        return items

    async def tags(self, repo: str, n: int | None = None) -> list[str]:
        return await self._paged(f"/v2/{repo}/tags/list", "tags", n)

    async def catalog(self, n: int | None = None) -> list[str]:
        return await self._paged("/v2/_catalog", "repositories", n)


@asynccontextmanager
async def registry_client(base: str, connections: int = 100) -> AsyncIterator[RegistryClient]:
    """A client whose connection pool caps the requests in flight at `connections`."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        yield RegistryClient(session, base)
