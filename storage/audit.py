"""The audit trail: written in the transaction of the change it records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from storage.db import Connection
from storage.models import AuditEvent, utcnow
from storage.rows import AuditRow, columns

RECORD_SQL = """
    INSERT INTO audit_event (id, workspace_id, inbox_id, action, api_key_prefix,
                             client_address, details, at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
"""
AUDIT_COLUMNS = columns(AuditEvent)
# Newest first, after the (at, id) cursor $3, $4 and for the inbox $5 (each NULL: any).
LIST_SQL = (
    f"SELECT {AUDIT_COLUMNS} FROM audit_event WHERE workspace_id = $1 "  # noqa: S608
    "AND ($5::uuid IS NULL OR inbox_id = $5) "
    "AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3)) "
    "ORDER BY at DESC, id DESC LIMIT $4"
)


def record_rows_sql(rows: str, *, first: int) -> str:
    """An INSERT of the audit row of the one row of ``rows`` (a CTE with ``workspace_id`` and
    ``inbox_id``; none if it is empty), for a statement that makes the change it records.
    Its parameters, from ``$first`` on: the audit row's id, action, api_key_prefix,
    client_address, details and at."""
    p = [f"${n}" for n in range(first, first + 6)]
    return (
        "INSERT INTO audit_event (id, workspace_id, inbox_id, action, api_key_prefix, "  # noqa: S608
        f"client_address, details, at) SELECT {p[0]}, r.workspace_id, r.inbox_id, {p[1]}, "
        f"{p[2]}, {p[3]}, {p[4]}::jsonb, {p[5]} FROM {rows} AS r RETURNING 1"
    )


async def record(
    connection: Connection,
    *,
    workspace_id: uuid.UUID,
    action: str,
    inbox_id: uuid.UUID | None,
    api_key_prefix: str | None,
    client_address: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    await connection.execute(
        RECORD_SQL,
        uuid.uuid4(),
        workspace_id,
        inbox_id,
        action,
        api_key_prefix,
        client_address,
        details or {},
        utcnow(),
    )


async def list_events(
    connection: Connection,
    workspace_id: uuid.UUID,
    *,
    first: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    inbox_id: uuid.UUID | None = None,
) -> tuple[list[AuditRow], bool]:
    """Newest first."""
    at, row_id = before if before is not None else (None, None)
    rows = await connection.fetch(
        LIST_SQL, workspace_id, at, row_id, first + 1, inbox_id, record_class=AuditRow
    )
    return rows[:first], len(rows) > first
