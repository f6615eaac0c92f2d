"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>, by tag and by digest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.api.helpers import ABSENT, Api, assert_error
from tests.documents import DOCKER_MANIFEST, OCI_MANIFEST, digest_of, image_manifest


async def test_put_by_tag_gives_201_with_the_digest(api: Api) -> None:
    image = await api.push_image("library/alpine", "3.19")
    assert image.digest == digest_of(image.manifest)
    resp = await api.put_manifest("library/alpine", "3.19", image.manifest)
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/library/alpine/manifests/{image.digest}"
    assert resp.headers["Docker-Content-Digest"] == image.digest
    assert "OCI-Subject" not in resp.headers


@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_get_gives_the_exact_pushed_bytes(api: Api, by: str) -> None:
    image = await api.push_image("img", "v1")
    resp = await api.client.get(f"/v2/img/manifests/{'v1' if by == 'tag' else image.digest}")
    assert resp.status == 200
    assert await resp.read() == image.manifest
    assert resp.headers["Content-Type"] == OCI_MANIFEST
    assert resp.headers["Docker-Content-Digest"] == image.digest
    assert resp.headers["Content-Length"] == str(len(image.manifest))


async def test_head_gives_digest_and_length_only(api: Api) -> None:
    """docker pull: HEAD by tag, reading Docker-Content-Digest and Content-Length."""
    image = await api.push_image("img", "v1")
    resp = await api.client.head("/v2/img/manifests/v1")
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == image.digest
    assert resp.headers["Content-Length"] == str(len(image.manifest))
    assert await resp.read() == b""


async def test_put_by_digest_stores_it_untagged(api: Api) -> None:
    image = await api.push_image("img", tag=None)
    resp = await api.client.get(f"/v2/img/manifests/{image.digest}")
    assert await resp.read() == image.manifest
    assert await (await api.client.get("/v2/img/tags/list")).json() == {"name": "img", "tags": []}


async def test_put_by_a_digest_the_body_does_not_have_is_400(api: Api) -> None:
    image = await api.push_image("img", "v1")
    resp = await api.put_manifest("img", digest_of(b"something else"), image.manifest)
    await assert_error(resp, 400, "DIGEST_INVALID")


async def test_docker_media_type_is_kept(api: Api) -> None:
    config = b'{"architecture": "amd64"}'
    await api.push_blob("img", config)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    assert (await api.put_manifest("img", "v1", body, DOCKER_MANIFEST)).status == 201
    resp = await api.client.get("/v2/img/manifests/v1")
    assert resp.headers["Content-Type"] == DOCKER_MANIFEST
    assert await resp.read() == body


async def test_content_type_parameters_are_not_part_of_the_media_type(api: Api) -> None:
    config = b'{"architecture": "arm64"}'
    await api.push_blob("img", config)
    body = image_manifest(config, [])
    resp = await api.put_manifest("img", "v1", body, f"{OCI_MANIFEST}; charset=utf-8")
    assert resp.status == 201
    assert (await api.client.get("/v2/img/manifests/v1")).headers["Content-Type"] == OCI_MANIFEST


async def test_subject_is_echoed_in_oci_subject(api: Api) -> None:
    base = await api.push_image("img", "v1")
    body = image_manifest(b"{}", [], subject=base.as_subject(), artifactType="text/plain")
    resp = await api.put_manifest("img", "sig", body)
    assert resp.status == 201
    assert resp.headers["OCI-Subject"] == base.digest


async def test_manifest_with_a_missing_blob_is_400(api: Api) -> None:
    """Layers never uploaded: 400 MANIFEST_BLOB_UNKNOWN."""
    resp = await api.put_manifest("img", "v1", image_manifest(b"{}", [b"never pushed"]))
    await assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"schemaVersion": 2, "mediaType": "text/plain"}']
)
async def test_malformed_manifest_is_400(api: Api, body: bytes) -> None:
    await assert_error(await api.put_manifest("img", "v1", body), 400, "MANIFEST_INVALID")


async def test_a_manifest_nested_too_deeply_is_400(api: Api) -> None:
    """4 MB of `[[[…]]]`: deeper than Python's JSON parser goes, and no 500."""
    depth = 2_000_000
    resp = await api.put_manifest("img", "v1", b"[" * depth + b"]" * depth)
    error = await assert_error(resp, 400, "MANIFEST_INVALID")
    assert "nested too deeply" in error["detail"]


async def test_schema1_manifest_is_415(api: Api) -> None:
    body = b'{"schemaVersion": 1, "name": "img", "tag": "v1", "fsLayers": []}'
    media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    await assert_error(await api.put_manifest("img", "v1", body, media_type), 415, "UNSUPPORTED")


async def test_manifest_over_the_limit_is_413(make_api: Callable[..., Awaitable[Api]]) -> None:
    """Over max_manifest_size: 413, told by Content-Length or found while reading a stream."""
    api = await make_api(max_manifest_size=100)
    await assert_error(await api.put_manifest("img", "v1", b" " * 101), 413, "MANIFEST_INVALID")

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 50

    resp = await api.client.put("/v2/img/manifests/v1", data=stream())
    await assert_error(resp, 413, "MANIFEST_INVALID")


async def test_a_limit_above_4_mib_is_honoured(make_api: Callable[..., Awaitable[Api]]) -> None:
    """max_manifest_size is the registry's setting, not a fixed 4 MiB in the store."""
    api = await make_api(max_manifest_size=8 * 1024 * 1024)
    image = await api.push_image("img", tag=None)
    document = json.loads(image.manifest)
    document["annotations"] = {"padding": "x" * (5 * 1024 * 1024)}
    resp = await api.put_manifest("img", "big", json.dumps(document).encode())
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("tag", ["-lead", "a" * 129, "bad!tag"])
async def test_malformed_tag_is_400(api: Api, method: str, tag: str) -> None:
    await api.push_image("img", "v1")
    resp = await api.client.request(method, f"/v2/img/manifests/{tag}", data=b"{}")
    await assert_error(resp, 400, "TAG_INVALID")


async def test_unknown_references_are_404(api: Api) -> None:
    """Unknown tag or digest: MANIFEST_UNKNOWN; unknown repository: NAME_UNKNOWN."""
    await api.push_image("img", "v1")
    await assert_error(await api.client.get("/v2/img/manifests/v2"), 404, "MANIFEST_UNKNOWN")
    await assert_error(await api.client.get(f"/v2/img/manifests/{ABSENT}"), 404, "MANIFEST_UNKNOWN")
    await assert_error(await api.client.head("/v2/img/manifests/v2"), 404, "MANIFEST_UNKNOWN")
    await assert_error(await api.client.get("/v2/none/manifests/v1"), 404, "NAME_UNKNOWN")


async def test_delete_by_tag_removes_only_the_tag(api: Api) -> None:
    image = await api.push_image("img", "v1")
    assert (await api.client.delete("/v2/img/manifests/v1")).status == 202
    await assert_error(await api.client.get("/v2/img/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert (await api.client.get(f"/v2/img/manifests/{image.digest}")).status == 200


async def test_delete_by_digest_removes_the_manifest_and_its_tags(api: Api) -> None:
    image = await api.push_image("img", "v1")
    assert (await api.client.delete(f"/v2/img/manifests/{image.digest}")).status == 202
    await assert_error(await api.client.get("/v2/img/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    resp = await api.client.get(f"/v2/img/manifests/{image.digest}")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("reference", ["v2", ABSENT])
async def test_delete_of_an_unknown_manifest_is_404(api: Api, reference: str) -> None:
    await api.push_image("img", "v1")
    resp = await api.client.delete(f"/v2/img/manifests/{reference}")
    await assert_error(resp, 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize(
    ("reference", "status", "code"),
    [
        ("sha256:short", 400, "DIGEST_INVALID"),
        ("-bad", 400, "TAG_INVALID"),
        ("v1", 404, "NAME_UNKNOWN"),
    ],
)
async def test_delete_in_an_unknown_repository(
    api: Api, reference: str, status: int, code: str
) -> None:
    """Malformed references are 400 whether or not the repository exists; else 404."""
    resp = await api.client.delete(f"/v2/none/manifests/{reference}")
    await assert_error(resp, status, code)
