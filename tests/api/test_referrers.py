"""GET /v2/<name>/referrers/<digest>[?artifactType=]: the OCI 1.1 referrers API."""

from __future__ import annotations

from tests.api.helpers import ABSENT, Api, assert_error
from tests.documents import OCI_INDEX

SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


async def test_referrers_lists_manifests_with_that_subject(api: Api) -> None:
    base = await api.push_image("img", "v1")
    sbom = await api.push_image("img", None, (b"sbom",), subject=base, artifact_type=SBOM)
    sig = await api.push_image("img", None, (b"sig",), subject=base, artifact_type=SIGNATURE)
    resp = await api.client.get(f"/v2/img/referrers/{base.digest}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == OCI_INDEX  # exactly: no charset (the OCI suite)
    assert "OCI-Filters-Applied" not in resp.headers
    index = await resp.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    found = {m["digest"]: m["artifactType"] for m in index["manifests"]}
    assert found == {sbom.digest: SBOM, sig.digest: SIGNATURE}


async def test_artifact_type_filter_is_announced(api: Api) -> None:
    base = await api.push_image("img", "v1")
    sbom = await api.push_image("img", None, (b"sbom",), subject=base, artifact_type=SBOM)
    await api.push_image("img", None, (b"sig",), subject=base, artifact_type=SIGNATURE)
    resp = await api.client.get(f"/v2/img/referrers/{base.digest}", params={"artifactType": SBOM})
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in (await resp.json())["manifests"]] == [sbom.digest]


async def test_no_referrers_is_an_empty_index(api: Api) -> None:
    """Also for a digest nothing has and a repository that does not exist: 200, empty."""
    await api.push_image("img", "v1")
    for name in ("img", "none"):
        resp = await api.client.get(f"/v2/{name}/referrers/{ABSENT}")
        assert resp.status == 200
        assert (await resp.json())["manifests"] == []


async def test_malformed_digest_or_name_is_400(api: Api) -> None:
    await assert_error(await api.client.get("/v2/img/referrers/v1"), 400, "DIGEST_INVALID")
    resp = await api.client.get(f"/v2/Bad/referrers/{ABSENT}")
    await assert_error(resp, 400, "NAME_INVALID")
