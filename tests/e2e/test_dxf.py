"""python-dxf against hroot: blobs, aliases (tags), cross-repository mounts, deletes."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import ModuleType

import pytest
import requests

from tests.documents import digest_of

from .conftest import Hroot

pytestmark = pytest.mark.e2e


def test_blobs_aliases_mounts_deletes(dxf: ModuleType, hroot: Hroot, tmp_path: Path) -> None:
    one = dxf.DXF(hroot.host, "dxf/one", insecure=True)
    two = dxf.DXF(hroot.host, "dxf/two", insecure=True)

    # A blob from a file (PUT with Content-Length) and one from chunks (chunked encoding).
    a_data = secrets.token_bytes(300_000)
    (tmp_path / "a").write_bytes(a_data)
    a = one.push_blob(str(tmp_path / "a"))
    assert a == digest_of(a_data)
    b_data = secrets.token_bytes(100_000)
    b = one.push_blob(data=iter([b_data[:40_000], b_data[40_000:]]), digest=digest_of(b_data))
    for digest, data in [(a, a_data), (b, b_data)]:
        assert one.blob_size(digest) == len(data)
        assert b"".join(one.pull_blob(digest)) == data

    # Aliases are tags of manifests that list the blobs.
    v1 = digest_of(one.set_alias("v1", a, b).encode())
    v2 = digest_of(one.set_alias("v2", b).encode())
    assert one.head_manifest_and_response("v1")[1].headers["Docker-Content-Digest"] == v1
    assert one.get_digest("v1") == a  # dxf makes the first blob the config
    assert one.get_alias("v1") == [a, b]
    assert sorted(one.list_aliases()) == ["v1", "v2"]
    hroot.assert_pushed("dxf/one", v1, v2)
    assert "dxf/one" in dxf.DXFBase(hroot.host, insecure=True).list_repos()

    # Mount: 201 for a blob the other repository has; 202 (an upload) for one it has not.
    assert two.mount_blob("dxf/one", a) == a
    assert b"".join(two.pull_blob(a)) == a_data
    with pytest.raises(dxf.exceptions.DXFMountFailed):
        two.mount_blob("dxf/one", digest_of(b"never pushed"))

    # Deleting an alias deletes its manifest (one more commit); then the blob can go.
    assert one.del_alias("v1") == [a, b]
    assert one.list_aliases() == ["v2"]
    commits = hroot.commits("dxf/one")
    assert len(commits) == 3 and v1 not in hroot.git("show", "hroot/dxf+one:index.json")
    one.del_blob(a)
    with pytest.raises(requests.HTTPError) as gone:
        one.blob_size(a)
    assert gone.value.response.status_code == 404
    assert two.blob_size(a) == len(a_data)  # the mount is a repository's blob of its own
    assert b"".join(one.pull_blob(b)) == b_data
