"""Which API keys are still usable: one query for every key a process holds connections for.

The websocket server re-checks its keys periodically (a revoked key's connections close); one
statement for all of them, instead of one per connection, keeps that cheap at any scale.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import ApiKey


async def active_api_keys(session: AsyncSession, ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """The ids among ``ids`` whose key exists and is not revoked."""
    if not ids:
        return set()
    rows = await session.execute(
        select(ApiKey.id).where(col(ApiKey.id).in_(list(ids)), col(ApiKey.revoked_at).is_(None))
    )
    return set(rows.scalars())
