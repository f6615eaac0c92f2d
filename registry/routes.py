"""The route table of the OCI distribution API, and of read-only git over HTTP (/git/).

Repository names contain slashes, so `{name}` matches greedily up to the LAST `/blobs/`,
`/manifests/`, `/tags/list` or `/referrers/`; the store validates the name itself. Routes are
tried in order: uploads come before blobs so `blobs/uploads/<id>` is never read as a digest.
"""

from __future__ import annotations

from aiohttp import web

from registry import base, blobs, catalog, githttp, manifests, referrers, tags, uploads
from registry.auth import endpoint as token

REPO = "/v2/{name:.+}"

ROUTES: list[web.RouteDef] = [
    web.get("/v2/", base.check),
    web.get("/v2", base.check),
    web.get("/v2/_catalog", catalog.list_repositories),
    web.get(REPO + "/tags/list", tags.list_tags),
    web.get(REPO + "/referrers/{digest}", referrers.list_referrers),
    web.post(REPO + "/blobs/uploads/", uploads.start_upload),
    web.get(REPO + "/blobs/uploads/{upload_id}", uploads.upload_status),
    web.patch(REPO + "/blobs/uploads/{upload_id}", uploads.append_chunk),
    web.put(REPO + "/blobs/uploads/{upload_id}", uploads.finish_upload),
    web.delete(REPO + "/blobs/uploads/{upload_id}", uploads.cancel_upload),
    web.get(REPO + "/blobs/{digest}", blobs.get_blob),
    web.delete(REPO + "/blobs/{digest}", blobs.delete_blob),
    web.get(REPO + "/manifests/{reference}", manifests.get_manifest),
    web.put(REPO + "/manifests/{reference}", manifests.put_manifest),
    web.delete(REPO + "/manifests/{reference}", manifests.delete_manifest),
    # The token endpoint of Docker's token flow (registry.auth), when authentication is on.
    web.get("/auth/token", token.get_token),
    web.post("/auth/token", token.post_token),
    # Read-only git over HTTP (smart protocol only); any other /git/ path is a 404.
    web.get("/git/info/refs", githttp.advertise_refs),
    web.post("/git/git-upload-pack", githttp.upload_pack_rpc),
    web.post("/git/git-receive-pack", githttp.refuse_push),
]
