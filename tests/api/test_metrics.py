"""/metrics of the in-process app: the series move as pushes and pulls happen, read with
prometheus-client's own parser, and a route is labelled by its pattern, never its path."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from registry.metrics import measure_objects
from storage import Store
from tests.api.helpers import Api
from tests.documents import digest_of

MANIFEST = "/v2/{name}/manifests/{reference}"
BLOB = "/v2/{name}/blobs/{digest}"
UPLOADS = "/v2/{name}/blobs/uploads/"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> Samples:
    """Every sample of /metrics, by (sample name, labels)."""
    resp = await api.client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, label: str) -> set[str]:
    return {v for (_, labels) in samples for k, v in labels if k == label}


async def test_a_push_and_a_pull_move_the_counters_and_the_histogram(api: Api) -> None:
    before = await scrape(api)
    layer = b"metrics layer " * 1000
    image = await api.push_image("metrics/app", "v1", layers=(layer,))
    assert (await api.client.get("/v2/metrics/app/manifests/v1")).status == 200
    resp = await api.client.get(f"/v2/metrics/app/blobs/{digest_of(layer)}")
    assert await resp.read() == layer
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    put = {"method": "PUT", "route": MANIFEST}
    assert moved("hroot_http_requests_total", **put, status="201") == 1
    assert moved("hroot_http_requests_total", method="GET", route=MANIFEST, status="200") == 1
    assert moved("hroot_http_requests_total", method="GET", route=BLOB, status="200") == 1
    assert moved("hroot_http_requests_total", method="POST", route=UPLOADS, status="201") == 2
    assert moved("hroot_http_request_duration_seconds_count", **put) == 1
    assert moved("hroot_http_request_duration_seconds_bucket", **put, le="+Inf") == 1
    assert moved("hroot_http_request_duration_seconds_sum", **put) > 0
    assert moved("hroot_http_received_bytes_total", route=UPLOADS) >= len(layer)
    assert moved("hroot_http_received_bytes_total", route=MANIFEST) == len(image.manifest)
    assert moved("hroot_http_sent_bytes_total", route=BLOB) >= len(layer)
    assert moved("hroot_http_sent_bytes_total", route=MANIFEST) == len(image.manifest)
    assert moved("hroot_actions_total", action="push") == 1
    assert moved("hroot_actions_total", action="pull") == 1
    assert moved("hroot_actions_total", action="delete") == 0
    assert moved("hroot_commits_total") == 1


async def test_routes_are_labelled_by_their_pattern_and_deletes_are_counted(api: Api) -> None:
    image = await api.push_image("team/one/app", "v1")
    assert (await api.client.head("/v2/team/one/app/manifests/v1")).status == 200
    assert (await api.client.get("/v2/team/one/app/manifests/nope")).status == 404
    assert (await api.client.delete(f"/v2/team/one/app/manifests/{image.digest}")).status == 202
    assert (await api.client.get("/no/such/path")).status == 404
    samples = await scrape(api)

    routes = label_values(samples, "route")
    assert MANIFEST in routes and "unmatched" in routes
    assert not any("team" in route or "nope" in route or "no/such" in route for route in routes)
    assert value(samples, "hroot_http_requests_total", method="HEAD", route=MANIFEST, status="200")
    assert value(samples, "hroot_http_requests_total", method="GET", route=MANIFEST, status="404")
    assert value(
        samples, "hroot_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert value(samples, "hroot_actions_total", action="pull") == 0  # a HEAD and a 404
    assert value(samples, "hroot_actions_total", action="delete") == 1
    assert not any(
        name == "hroot_actions_total" and "repository" in dict(labels) for name, labels in samples
    )


async def test_uploads_in_progress_and_store_sizes_served_again_for_a_while(
    api: Api, store: Store
) -> None:
    assert value(await scrape(api), "hroot_uploads_in_progress") == 0
    location = await api.start_upload("metrics/uploads")
    assert value(await scrape(api), "hroot_uploads_in_progress") == 1
    assert (await api.client.delete(location)).status == 204
    samples = await scrape(api)
    assert value(samples, "hroot_uploads_in_progress") == 0

    await api.push_image("metrics/sizes", "v1")
    measured = measure_objects(store.path)
    assert measured.loose > 0 and measured.loose_bytes > 0
    # the first scrape measured an empty store, and is served again for a while
    assert value(await scrape(api), "hroot_store_objects", state="loose") == 0


async def test_store_sizes_count_loose_and_packed_objects(
    make_api: Callable[..., Awaitable[Api]], store: Store
) -> None:
    api = await make_api()
    await api.push_image("metrics/packed", "v1", layers=(b"one", b"two"))
    loose = measure_objects(store.path)
    samples = await scrape(api)
    assert value(samples, "hroot_store_objects", state="loose") == loose.loose > 0
    assert value(samples, "hroot_store_bytes", state="loose") == loose.loose_bytes > 0
    assert value(samples, "hroot_store_objects", state="packed") == 0
    assert value(samples, "hroot_repositories") == 1

    git_gc = await asyncio.create_subprocess_exec("git", "--git-dir", str(store.path), "gc", "-q")
    assert await git_gc.wait() == 0
    samples = await scrape(await make_api())  # a new app: no measure cached yet
    assert 0 < value(samples, "hroot_store_objects", state="packed") <= loose.loose
    assert value(samples, "hroot_store_bytes", state="packed") > 0
    assert value(samples, "hroot_store_objects", state="loose") < loose.loose


async def test_two_apps_in_one_process_keep_their_own_series(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    first, second = await make_api(), await make_api()
    await first.push_image("metrics/first", "v1")
    first_samples, second_samples = await scrape(first), await scrape(second)
    put = {"method": "PUT", "route": MANIFEST, "status": "201"}
    assert value(first_samples, "hroot_http_requests_total", **put) == 1
    assert value(second_samples, "hroot_http_requests_total", **put) == 0


async def test_a_followers_lag(make_api: Callable[..., Awaitable[Api]], tmp_path: Path) -> None:
    primary = Store.open(tmp_path / "primary.git")
    try:
        follower = await make_api(follow=str(primary.path), follow_interval=0.1)
        lag = (await scrape(follower))[("hroot_follower_lag_seconds", frozenset())]
        for _ in range(100):
            if not math.isinf(lag):
                break
            await asyncio.sleep(0.1)
            lag = (await scrape(follower))[("hroot_follower_lag_seconds", frozenset())]
        assert 0 <= lag < 5
    finally:
        primary.close()


async def test_gc_and_git_maintenance_runs_are_counted(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(gc_interval=0.2)
    samples = await scrape(api)
    assert value(samples, "hroot_gc_runs_total", outcome="succeeded") == 0
    assert value(samples, "hroot_git_maintenance_runs_total") == 0
    for _ in range(100):
        await asyncio.sleep(0.1)
        samples = await scrape(api)
        if value(samples, "hroot_gc_runs_total", outcome="succeeded") >= 1:
            break
    assert value(samples, "hroot_gc_runs_total", outcome="succeeded") >= 1
    assert value(samples, "hroot_gc_runs_total", outcome="failed") == 0
    assert value(samples, "hroot_gc_seconds_total") > 0
