"""Engine, sessions and the database URL forms the project uses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` (what people and asyncpg write) -> SQLAlchemy's asyncpg form."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return urlunsplit(("postgresql+asyncpg", *parts[1:]))
    raise ValueError("the database URL must start with postgresql://")


def asyncpg_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, *parts[2:]))
    return url


@dataclass(slots=True)
class Database:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(
    url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = 10.0,
    statement_timeout_ms: int = 15_000,
) -> Database:
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # Pre-ping costs three round trips per checkout, but without it every pooled connection
        # left from before a database restart fails one request or subscription read first.
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=connect_timeout,
        connect_args={
            "timeout": connect_timeout,
            "server_settings": {
                "statement_timeout": str(statement_timeout_ms),
                "application_name": "inboxd",
            },
        },
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Database(url=url, engine=engine, sessions=sessions)


def older_than(
    at_column: Any, id_column: Any, cursor: tuple[datetime, uuid.UUID]
) -> ColumnElement[bool]:
    """Keyset condition for newest-first pages: rows after ``cursor`` in (at, id) order."""
    at, row_id = cursor
    return or_(at_column < at, and_(at_column == at, id_column < row_id))
