"""The audit trail: written in the transaction of the change it records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.db import older_than
from storage.models import AuditEvent


async def record(
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    action: str,
    inbox_id: uuid.UUID | None,
    api_key_prefix: str | None,
    client_address: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            workspace_id=workspace_id,
            inbox_id=inbox_id,
            action=action,
            api_key_prefix=api_key_prefix,
            client_address=client_address,
            details=details or {},
        )
    )
    await session.flush()


async def list_events(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    first: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    inbox_id: uuid.UUID | None = None,
) -> tuple[list[AuditEvent], bool]:
    """Newest first."""
    clauses: list[Any] = [col(AuditEvent.workspace_id) == workspace_id]
    if inbox_id is not None:
        clauses.append(col(AuditEvent.inbox_id) == inbox_id)
    if before is not None:
        clauses.append(older_than(col(AuditEvent.at), col(AuditEvent.id), before))
    rows = list(
        (
            await session.execute(
                select(AuditEvent)
                .where(*clauses)
                .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
                .limit(first + 1)
            )
        ).scalars()
    )
    return rows[:first], len(rows) > first
