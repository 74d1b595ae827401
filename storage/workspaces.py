"""Workspaces: the tenant boundary and its plan (inbox limit, subscription)."""

from __future__ import annotations

import uuid

from storage.db import Connection
from storage.errors import NotFoundError
from storage.models import Workspace, utcnow
from storage.rows import WorkspaceRow, columns

WORKSPACE_COLUMNS = columns(Workspace)
CREATE_SQL = (
    "INSERT INTO workspace (id, name, max_inboxes, subscription_active, created_at) "  # noqa: S608
    f"VALUES ($1, $2, $3, $4, $5) RETURNING {WORKSPACE_COLUMNS}"
)
GET_SQL = f"SELECT {WORKSPACE_COLUMNS} FROM workspace WHERE id = $1"  # noqa: S608
FIND_SQL = f"SELECT {WORKSPACE_COLUMNS} FROM workspace WHERE name = $1"  # noqa: S608
SET_PLAN_SQL = """
    UPDATE workspace SET max_inboxes = coalesce($2, max_inboxes),
                         subscription_active = coalesce($3, subscription_active)
     WHERE id = $1
"""


async def create_workspace(
    connection: Connection,
    name: str,
    *,
    max_inboxes: int = 10,
    subscription_active: bool = True,
) -> WorkspaceRow:
    workspace: WorkspaceRow | None = await connection.fetchrow(
        CREATE_SQL,
        uuid.uuid4(),
        name,
        max_inboxes,
        subscription_active,
        utcnow(),
        record_class=WorkspaceRow,
    )
    assert workspace is not None  # an INSERT ... RETURNING without conditions returns its row
    return workspace


async def get_workspace(connection: Connection, workspace_id: uuid.UUID) -> WorkspaceRow:
    workspace: WorkspaceRow | None = await connection.fetchrow(
        GET_SQL, workspace_id, record_class=WorkspaceRow
    )
    if workspace is None:
        raise NotFoundError("workspace", workspace_id)
    return workspace


async def find_workspace(connection: Connection, name: str) -> WorkspaceRow | None:
    workspace: WorkspaceRow | None = await connection.fetchrow(
        FIND_SQL, name, record_class=WorkspaceRow
    )
    return workspace


async def set_plan(
    connection: Connection,
    workspace_id: uuid.UUID,
    *,
    max_inboxes: int | None = None,
    subscription_active: bool | None = None,
) -> None:
    if max_inboxes is not None or subscription_active is not None:
        await connection.execute(SET_PLAN_SQL, workspace_id, max_inboxes, subscription_active)
