"""Change events: written with ``pg_notify`` inside the transaction that made the change.

Postgres delivers a NOTIFY only when its transaction commits, so a subscriber never hears of a
change that was rolled back. Payloads carry ids and versions only; a subscriber re-reads state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "inboxd_events"


class EventKind(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TEST_CHANGED = "TEST_CHANGED"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID
    version: int
    test_id: uuid.UUID | None = None

    def encode(self) -> str:
        return orjson.dumps(
            {
                "k": self.kind.value,
                "w": str(self.workspace_id),
                "i": str(self.inbox_id),
                "v": self.version,
                "t": str(self.test_id) if self.test_id else None,
            }
        ).decode()

    @classmethod
    def decode(cls, payload: str) -> Event:
        data = orjson.loads(payload)
        return cls(
            kind=EventKind(data["k"]),
            workspace_id=uuid.UUID(data["w"]),
            inbox_id=uuid.UUID(data["i"]),
            version=int(data["v"]),
            test_id=uuid.UUID(data["t"]) if data.get("t") else None,
        )


async def publish(session: AsyncSession, event: Event) -> None:
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": event.encode()},
    )
