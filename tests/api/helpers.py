"""Short ways to push images and check answers, so each API test states only what it is about."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.documents import OCI_MANIFEST, descriptor, digest_of, image_manifest

API_VERSION = "registry/2.0"

# A digest nothing in these tests has.
ABSENT = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Image:
    name: str
    reference: str
    digest: str
    manifest: bytes
    layers: list[bytes]

    def as_subject(self) -> dict[str, Any]:
        return descriptor(OCI_MANIFEST, self.manifest)


async def assert_error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The answer is the spec's JSON error (none for HEAD) with the API version header."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Docker-Distribution-API-Version"] == API_VERSION
    if resp.method == "HEAD":
        assert await resp.read() == b""
        return {}
    assert resp.content_type == "application/json"
    body = await resp.json()
    (error,) = body["errors"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "detail"}
    return error


class Api:
    """A test client plus the pushes most tests start from."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def push_blob(self, name: str, data: bytes, algorithm: str = "sha256") -> str:
        """One monolithic `POST ?digest=`; the blob's digest."""
        digest = digest_of(data, algorithm)
        resp = await self.client.post(f"/v2/{name}/blobs/uploads/?digest={digest}", data=data)
        assert resp.status == 201, await resp.text()
        return digest

    async def start_upload(self, name: str) -> str:
        """A new upload session; its Location."""
        resp = await self.client.post(f"/v2/{name}/blobs/uploads/")
        assert resp.status == 202, await resp.text()
        return resp.headers["Location"]

    async def put_manifest(
        self, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
    ) -> ClientResponse:
        return await self.client.put(
            f"/v2/{name}/manifests/{reference}", data=body, headers={"Content-Type": media_type}
        )

    async def push_image(
        self,
        name: str,
        tag: str | None = "latest",
        layers: tuple[bytes, ...] = (b"layer one",),
        subject: Image | None = None,
        artifact_type: str | None = None,
    ) -> Image:
        """Blobs then manifest, as clients push it: under `tag`, or by digest when None."""
        config = json.dumps({"os": "linux", "layers": len(layers)}).encode()
        for blob in (config, *layers):
            await self.push_blob(name, blob)
        body = image_manifest(
            config,
            list(layers),
            subject=subject.as_subject() if subject else None,
            artifactType=artifact_type,
        )
        reference = digest_of(body) if tag is None else tag
        resp = await self.put_manifest(name, reference, body)
        assert resp.status == 201, await resp.text()
        return Image(name, reference, resp.headers["Docker-Content-Digest"], body, list(layers))
