"""Clients that leave in the middle of a body: no error logged, nothing left behind."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from storage import Store
from tests.documents import digest_of

BIG = b"x" * (8 << 20)  # more than loopback socket buffers hold, so the server sees the abort


async def _send_and_leave(address: tuple[str, int], head: str, body: bytes = b"") -> bytes:
    """Send a request (maybe part of its body), read a little of the answer, then reset."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(100), 5) if not body else b""
    await asyncio.sleep(0.1)
    writer.transport.abort()
    return answer


async def _settle(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Wait until no upload is spooled, then check nothing worse than INFO was logged."""
    uploads = store.path / "hroot" / "uploads"
    for _ in range(100):
        if not any(uploads.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert not any(uploads.iterdir())
    assert all(r.levelno < logging.WARNING and not r.exc_info for r in caplog.records)


async def test_leaving_a_monolithic_upload(
    served: tuple[str, int], store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a POST ?digest= body, then gone: the upload is discarded (its id was never told)."""
    head = (
        f"POST /v2/img/blobs/uploads/?digest={digest_of(BIG)} HTTP/1.1\r\n"
        f"Host: x\r\nContent-Length: {len(BIG)}\r\n\r\n"
    )
    await _send_and_leave(served, head, BIG[: len(BIG) // 2])
    await _settle(store, caplog)


async def test_leaving_a_download(
    served: tuple[str, int], store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    digest = store.put_blob("img", digest_of(BIG), io.BytesIO(BIG), len(BIG)).digest
    answer = await _send_and_leave(
        served, f"GET /v2/img/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(0.2)
    await _settle(store, caplog)
