"""GET /v2/<name>/referrers/<digest>: the OCI 1.1 referrers API."""

from __future__ import annotations

import json

from aiohttp import web

from registry.common import blocking, store
from storage.manifests import OCI_INDEX


async def list_referrers(request: web.Request) -> web.Response:
    """200 with an image index, also when nothing refers to the digest (the spec says so)."""
    artifact_type = request.query.get("artifactType") or None
    index = await blocking(
        request,
        store(request).referrers,
        request.match_info["name"],
        request.match_info["digest"],
        artifact_type,
    )
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
    # bytes, not text: aiohttp would add "; charset=utf-8", which the OCI suite refuses
    return web.Response(body=json.dumps(index).encode(), content_type=OCI_INDEX, headers=headers)
