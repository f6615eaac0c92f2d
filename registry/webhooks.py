"""Where notification webhooks go (README "Events"): `[[webhook]]` tables of the config.

As Distribution's `notifications.endpoints`: a URL, extra headers (an Authorization the
receiver wants, say), how long one delivery may take, and which actions it wants.
registry.events sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from registry.tables import tables

ACTIONS = ("push", "pull", "delete")


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0  # seconds one delivery may take
    actions: frozenset[str] = frozenset(ACTIONS)  # the events it is sent

    def __str__(self) -> str:  # for logs: no credentials of the URL
        parts = urlsplit(self.url)
        return (
            f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        )


def parse_webhooks(value: Any) -> tuple[Webhook, ...]:
    """`[[webhook]]` tables: url, and optionally headers (a table), timeout, actions."""
    webhooks = []
    for where, table in tables(
        value, "webhook", "webhook", {"url", "headers", "timeout", "actions"}
    ):
        url = table.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{where}: url must be an http(s) URL")
        headers = table.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError(f"{where}: headers must be a table of strings")
        timeout = table.get("timeout", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"{where}: timeout must be a positive number of seconds")
        actions = table.get("actions", list(ACTIONS))
        if not isinstance(actions, list) or not set(actions) <= set(ACTIONS) or not actions:
            raise ValueError(f"{where}: actions are some of {', '.join(ACTIONS)}")
        webhooks.append(Webhook(url, tuple(headers.items()), float(timeout), frozenset(actions)))
    return tuple(webhooks)
