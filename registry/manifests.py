"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>: by tag or by digest."""

from __future__ import annotations

from contextlib import aclosing

from aiohttp import web

from registry.common import blocking, body_pieces, config, ensure_room, store
from registry.proxy import proxy_of
from storage.digests import is_digest
from storage.errors import ManifestInvalid, ManifestTooLarge


async def get_manifest(request: web.Request) -> web.Response:
    """GET and HEAD: the exact bytes that were pushed, under the media type they were pushed
    as; for an upstream's name, what its pull-through cache has or fetches."""
    name, reference = request.match_info["name"], request.match_info["reference"]
    if (cache := proxy_of(request, name)) is not None:
        manifest = await cache.manifest(name, reference)
    else:
        manifest = await blocking(request, store(request).get_manifest, name, reference)
    return web.Response(
        body=manifest.body,
        headers={
            "Content-Type": manifest.media_type,
            "Docker-Content-Digest": manifest.digest,
            "ETag": f'"{manifest.digest}"',
        },
    )


async def _read_manifest(request: web.Request) -> bytes:
    """The body, refused with 413 past max_manifest_size: up front when Content-Length says so."""
    limit = config(request).max_manifest_size
    if request.content_length is not None and request.content_length > limit:
        raise ManifestTooLarge(f"{request.content_length} bytes, the limit is {limit}")
    ensure_room(request)
    async with aclosing(body_pieces(request, ManifestInvalid, limit + 1)) as pieces:
        async for body in pieces:
            if len(body) > limit:
                raise ManifestTooLarge(f"more than {limit} bytes")
            return body
    return b""


async def put_manifest(request: web.Request) -> web.Response:
    """201 with the digest; OCI-Subject tells referrers-aware clients the subject was seen."""
    name = request.match_info["name"]
    body = await _read_manifest(request)
    manifest = await blocking(
        request,
        store(request).put_manifest,
        name,
        request.match_info["reference"],
        body,
        request.headers.get("Content-Type"),  # parameters and all: the store reads it
        config(request).max_manifest_size,
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{manifest.digest}",
        "Docker-Content-Digest": manifest.digest,
    }
    if manifest.subject:
        headers["OCI-Subject"] = manifest.subject
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request) -> web.Response:
    """202. By digest the manifest goes with all its tags; by tag only the tag goes."""
    name, reference = request.match_info["name"], request.match_info["reference"]
    st = store(request)
    if is_digest(reference):
        await blocking(request, st.delete_manifest, name, reference)
    else:
        await blocking(request, st.delete_tag, name, reference)
    return web.Response(status=202)
