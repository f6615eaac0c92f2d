"""Upload sessions per client address (config.max_uploads_per_client).

Each session a client opens (POST /blobs/uploads/) counts against its address until it
is finished, cancelled, discarded after a failure, found gone (a 404 of its repository,
after gc or expiry), or older than config.upload_lifetime, when the store refuses it
anyway. One more is 429 TOOMANYREQUESTS, before anything is written. The counts live in
this process only: a restart forgets them, as the sessions' owners might be long gone.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from registry.common import CONFIG
from registry.errors import TooManyRequests


@dataclass(frozen=True)
class _Session:
    client: str
    repository: str
    opened: float  # time.monotonic()


class UploadSessions:
    """The open sessions, by upload id, oldest first, and how many each client has."""

    def __init__(self, limit: int, lifetime: float) -> None:
        self.limit = limit
        self.lifetime = lifetime
        self._sessions: dict[str, _Session] = {}
        self._counts: Counter[str] = Counter()
        self._reservations = itertools.count()

    def count(self, client: str) -> int:
        """How many sessions `client` has open now."""
        self._expire()
        return self._counts[client]

    async def open(self, client: str, repository: str, start: Callable[[], Awaitable[str]]) -> str:
        """The id `start` opens for `client`, or TooManyRequests when it has `limit` open.

        The slot is taken before `start` runs, so concurrent requests cannot overshoot.
        """
        if self.count(client) >= self.limit:
            raise TooManyRequests(
                f"{client} has {self.limit} upload sessions open, the limit "
                "(max_uploads_per_client): finish or cancel one first",
                message=f"too many upload sessions open (the limit is {self.limit})",
            )
        reservation = f"reserved-{next(self._reservations)}"  # never an upload id (hex)
        self._add(reservation, _Session(client, repository, time.monotonic()))
        try:
            upload_id = await start()
        finally:
            self._drop(reservation)
        self._add(upload_id, _Session(client, repository, time.monotonic()))
        return upload_id

    def close(self, repository: str, upload_id: str) -> None:
        """The session ended; an id used under another repository is not its session."""
        session = self._sessions.get(upload_id)
        if session is not None and session.repository == repository:
            self._drop(upload_id)

    def _add(self, key: str, session: _Session) -> None:
        self._sessions[key] = session
        self._counts[session.client] += 1

    def _drop(self, key: str) -> None:
        session = self._sessions.pop(key, None)
        if session is None:
            return
        self._counts[session.client] -= 1
        if not self._counts[session.client]:
            del self._counts[session.client]

    def _expire(self) -> None:
        """Drop sessions past their lifetime: the oldest come first, so this stops early."""
        cutoff = time.monotonic() - self.lifetime
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.opened > cutoff:
                return
            self._drop(key)


UPLOAD_SESSIONS = web.AppKey("upload_sessions", UploadSessions)


def setup(app: web.Application) -> None:
    config = app[CONFIG]
    app[UPLOAD_SESSIONS] = UploadSessions(config.max_uploads_per_client, config.upload_lifetime)


def sessions(request: web.Request) -> UploadSessions:
    return request.app[UPLOAD_SESSIONS]
