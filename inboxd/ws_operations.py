"""What a graphql-transport-ws connection holds per operation id: a member of a shared feed,
or an operation Strawberry runs in a task. Slots only: ten thousand of them stay small."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from inboxd.ws_connection import Connection
    from schema.feeds import StatusFeed


class Member:
    """A subscription served by a shared feed: three references, no task."""

    __slots__ = ("connection", "feed", "field", "id")

    def __init__(self, connection: Connection, op_id: str, field: str | None) -> None:
        self.connection = connection
        self.id = op_id
        self.feed: StatusFeed | None = None
        self.field = field  # the subscription's root field, when metrics are on

    def next(self, payload: str) -> None:
        self.connection.post_next(self.id, payload)

    def complete(self) -> None:
        if self.connection.operations.get(self.id) is self:
            del self.connection.operations[self.id]
            self.connection.post_text(orjson.dumps({"id": self.id, "type": "complete"}).decode())

    def fallback(
        self, query: str, operation_name: str | None, variables: dict[str, Any] | None
    ) -> None:
        if self.connection.operations.get(self.id) is self:
            del self.connection.operations[self.id]
            self.connection.start_operation(self.id, query, variables, operation_name)


class Operation:
    """A subscription (or query) run by Strawberry in a task of its own."""

    __slots__ = ("field", "id", "task")

    def __init__(self, op_id: str, field: str | None = None) -> None:
        self.id = op_id
        self.task: asyncio.Task[None] | None = None
        self.field = field  # a subscription's root field, when metrics are on
