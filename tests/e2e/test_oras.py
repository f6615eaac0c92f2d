"""oras (the Python client) against hroot: artifacts pushed whole and in chunks, pulled back."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import Hroot

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(oras: ModuleType, hroot: Hroot) -> Any:
    # oras retries a failed request five times, sleeping up to 80 s in between; a test wants
    # the first failure, with the server's answer, at once.
    class FailFast(oras.OrasClient):  # type: ignore[misc, name-defined]
        do_request = oras.OrasClient.do_request.__wrapped__

    return FailFast(hostname=hroot.host, insecure=True)


def push_and_pull(
    client: Any, hroot: Hroot, name: str, files: dict[str, bytes], tmp_path: Path, **push: Any
) -> str:
    """Push `files` as an artifact `name:v1`, pull it into a new dir, compare; its digest."""
    source = tmp_path / "in"
    source.mkdir()
    for filename, data in files.items():
        (source / filename).write_bytes(data)
    target = f"{hroot.host}/{name}:v1"
    response = client.push(
        target=target,
        files=[str(source / filename) for filename in files],
        disable_path_validation=True,
        **push,
    )
    digest = str(response.headers["Docker-Content-Digest"])
    hroot.assert_pushed(name, digest)

    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for path in pulled:
        assert Path(path).read_bytes() == files[Path(path).name], path
    assert client.get_tags(f"{hroot.host}/{name}") == ["v1"]
    return digest


def test_monolithic_upload(client: Any, hroot: Hroot, tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    files = {"notes.txt": token.encode(), "data.bin": secrets.token_bytes(200_000)}
    push_and_pull(
        client, hroot, "oras/whole", files, tmp_path, manifest_annotations={"hroot.test": token}
    )
    manifest = client.get_manifest(f"{hroot.host}/oras/whole:v1")
    assert manifest["annotations"]["hroot.test"] == token
    assert {
        layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]
    } == set(files)

    client.delete_tag(f"{hroot.host}/oras/whole", "v1")
    assert client.get_tags(f"{hroot.host}/oras/whole") == []


def test_chunked_upload(client: Any, hroot: Hroot, tmp_path: Path) -> None:
    # 2.5 MB in 1 MiB PATCHes with Content-Range, then an empty PUT ?digest=.
    files = {"big.bin": secrets.token_bytes(2_500_000)}
    push_and_pull(
        client, hroot, "oras/chunked", files, tmp_path, do_chunked=True, chunk_size=1 << 20
    )
