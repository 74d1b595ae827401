"""Workspaces: the tenant boundary and its plan (inbox limit, subscription)."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.errors import NotFoundError
from storage.models import Workspace


async def create_workspace(
    session: AsyncSession, name: str, *, max_inboxes: int = 10, subscription_active: bool = True
) -> Workspace:
    workspace = Workspace(
        name=name, max_inboxes=max_inboxes, subscription_active=subscription_active
    )
    session.add(workspace)
    await session.flush()
    return workspace


async def get_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace:
    workspace = await session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFoundError("workspace", workspace_id)
    return workspace


async def find_workspace(session: AsyncSession, name: str) -> Workspace | None:
    result = await session.execute(select(Workspace).where(col(Workspace.name) == name))
    return result.scalar_one_or_none()


async def set_plan(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    max_inboxes: int | None = None,
    subscription_active: bool | None = None,
) -> None:
    values: dict[str, object] = {}
    if max_inboxes is not None:
        values["max_inboxes"] = max_inboxes
    if subscription_active is not None:
        values["subscription_active"] = subscription_active
    if values:
        await session.execute(
            update(Workspace).where(col(Workspace.id) == workspace_id).values(**values)
        )
