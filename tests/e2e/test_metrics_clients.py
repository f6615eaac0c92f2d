"""skopeo pushes and pulls against `hroot serve --metrics-listen`: the separate /metrics
moves, /health and /ready answer there, and the API's address serves none of it twice."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Cli, Hroot, ImageMaker, for_one_test, serving
from .oci import check_layout
from .tools import free_port

pytestmark = pytest.mark.e2e

MANIFEST = "/v2/{name}/manifests/{reference}"
BLOB = "/v2/{name}/blobs/{digest}"
REPO_ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Hroot, str]]:
    """A server of its own with --metrics-listen, and that address's base URL."""
    listen = f"127.0.0.1:{free_port()}"
    with serving(tmp_path / "hroot.git", tmp_path / "server.log", "--metrics-listen", listen) as h:
        for server in for_one_test(h):
            yield server, f"http://{listen}"


def get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, errors included."""
    for _ in range(50):  # the metrics site starts just after the API's
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except urllib.error.URLError as e:
            if not isinstance(e.reason, ConnectionRefusedError):
                raise
            time.sleep(0.1)
    raise AssertionError(f"nothing answers {url}")


def scrape(url: str) -> Samples:
    status, body = get(url + "/metrics")
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_a_push_and_a_pull_by_skopeo_move_the_separate_metrics(
    served: tuple[Hroot, str], skopeo: Cli, make_image: ImageMaker, tmp_path: Path
) -> None:
    hroot, side = served
    status, body = get(side + "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    before = scrape(side)

    layout = tmp_path / "layout"
    payload = secrets.token_bytes(256 * 1024)
    digest = make_image(layout, "v1", {"/etc/payload": payload})
    ref = hroot.ref("metrics/app", "v1")
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{ref}",
    )
    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{back}:v1")
    assert check_layout(back, "v1") == digest
    after = scrape(side)

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    put = {"method": "PUT", "route": MANIFEST}
    assert moved("hroot_http_requests_total", **put, status="201") == 1
    assert moved("hroot_http_request_duration_seconds_count", **put) == 1
    assert moved("hroot_http_requests_total", method="GET", route=BLOB, status="200") >= 2
    assert moved("hroot_actions_total", action="push") == 1
    assert moved("hroot_actions_total", action="pull") >= 1
    assert moved("hroot_commits_total") == 1
    received = sum(v for (n, _), v in after.items() if n == "hroot_http_received_bytes_total")
    assert received >= len(payload)  # busybox and the payload, gzipped: about as big
    assert moved("hroot_http_sent_bytes_total", route=BLOB) >= len(payload)
    assert after[("hroot_repositories", frozenset())] == 1
    assert after[("hroot_uploads_in_progress", frozenset())] == 0
    assert not any("metrics/app" in value for _, labels in after for _, value in labels)

    status, body = get(side + "/ready")
    assert status == 200, body
    assert json.loads(body)["checks"]["store"] == {"ok": True, "repositories": 1}
    assert get(side + "/v2/")[0] == 404  # the API is not served there
    assert get(f"http://{hroot.host}/metrics")[0] == 200  # and /metrics is on the API's too
    # the scrapes of the separate address are not requests of the API
    assert not any(dict(labels).get("route") == "/metrics" for _, labels in after)


def test_the_dockerfile_health_check_passes_against_a_real_server(
    served: tuple[Hroot, str],
) -> None:
    hroot, _ = served
    check = healthcheck_argv()
    assert check[:2] == ["python", "-c"]
    port = hroot.host.rsplit(":", 1)[1]
    script = check[2].replace("127.0.0.1:5000", f"127.0.0.1:{port}")
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 0
    assert (
        subprocess.run([sys.executable, "-c", script.replace(port, str(free_port()))]).returncode
        == 1
    )


def healthcheck_argv() -> list[Any]:
    """The JSON array after HEALTHCHECK's CMD in the Dockerfile."""
    lines = (REPO_ROOT / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1].splitlines()
    command = next(line for line in lines if line.strip().startswith("CMD "))
    return list(json.loads(command.strip().removeprefix("CMD ")))
