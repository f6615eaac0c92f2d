"""Who may do what to which repositories: the access grants of the config (README "Security").

A grant gives `actions` (pull, push, delete) on repositories whose names match one of its
`names` patterns to its `users` and the members of its `groups`. Patterns are shell-style
(fnmatch): `*` matches any characters, slashes included, so `team/*` covers `team/a/b`.
With no grants at all, every authenticated user may do everything, as with Distribution's
htpasswd; anonymous requests may only pull what `anonymous_pull` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from registry.tables import tables

ACTIONS = ("pull", "push", "delete")
EVERYONE = "*"  # in a grant's users: every authenticated user


@dataclass(frozen=True)
class Grant:
    names: tuple[str, ...]
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


def matches(patterns: tuple[str, ...], name: str) -> bool:
    """Whether repository `name` matches one of the shell-style `patterns`."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Rules:
    grants: tuple[Grant, ...] = ()
    groups: Mapping[str, tuple[str, ...]] | None = None
    anonymous_pull: tuple[str, ...] = ()

    def _grants_of(self, user: str) -> list[Grant]:
        member_of = {g for g, users in (self.groups or {}).items() if user in users}
        return [
            grant
            for grant in self.grants
            if EVERYONE in grant.users or user in grant.users or grant.groups & member_of
        ]

    def allows(self, user: str | None, action: str, name: str) -> bool:
        """Whether `user` (None: anonymous) may `action` the repository `name`."""
        return self._allows(user, action, lambda patterns: matches(patterns, name))

    def allows_everywhere(self, user: str | None, action: str) -> bool:
        """Whether `user` may `action` every repository, whatever its name: a pattern `*`."""
        return self._allows(user, action, lambda patterns: EVERYONE in patterns)

    def _allows(
        self, user: str | None, action: str, covers: Callable[[tuple[str, ...]], bool]
    ) -> bool:
        """Whether anonymous pulls, or a grant of `user`, give `action` on names whose
        patterns `covers` accepts."""
        if action == "pull" and covers(self.anonymous_pull):
            return True
        if user is None:
            return False
        if not self.grants:
            return True
        return any(
            action in grant.actions and covers(grant.names) for grant in self._grants_of(user)
        )

    def anyone_may_pull(self) -> bool:
        """Whether anonymous requests can pull anything at all."""
        return bool(self.anonymous_pull)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def parse_patterns(value: Any) -> tuple[str, ...]:
    """`anonymous_pull = ["public/*", …]`."""
    return _strings(value, "it")


def parse_groups(value: Any) -> dict[str, tuple[str, ...]]:
    """`[groups]` with `NAME = ["user", …]` each."""
    if not isinstance(value, dict):
        raise ValueError("it must be a table of group = [users]")
    return {group: _strings(users, f"group {group!r}") for group, users in value.items()}


def parse_grants(value: Any) -> tuple[Grant, ...]:
    """`[[access]]` tables: names and actions, and users and/or groups."""
    grants = []
    for where, table in tables(value, "access", "grant", {"names", "actions", "users", "groups"}):
        if "names" not in table or "actions" not in table:
            raise ValueError(f"{where}: names and actions are required")
        actions = set(_strings(table["actions"], f"{where}: actions"))
        if EVERYONE in actions:
            actions = set(ACTIONS)
        if not actions <= set(ACTIONS):
            raise ValueError(f"{where}: actions are {', '.join(ACTIONS)} or *")
        users = frozenset(_strings(table.get("users", []), f"{where}: users"))
        groups = frozenset(_strings(table.get("groups", []), f"{where}: groups"))
        if not users and not groups:
            raise ValueError(f"{where}: say whom it is for: users, groups or both")
        grants.append(
            Grant(_strings(table["names"], f"{where}: names"), frozenset(actions), users, groups)
        )
    return tuple(grants)
