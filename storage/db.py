"""Engine, sessions and the database URL forms the project uses."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from sqlalchemy import ColumnElement, and_, event, or_
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage import observe


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


class DatabaseUnreachable(ConnectionError):
    """Postgres refused a new connection (the asyncpg pool's connect)."""


# The database is down or unreachable (from either pool): an operation may succeed if retried.
# What Postgres refused (a NUL in text, a bad value) is not among them (issue 11 point 7):
# SQLAlchemy wraps both kinds in a plain DBAPIError, so _classify_outage sorts its outages out.
_OUTAGE_CAUSES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # Server shutting down or starting, statement timeout (57xxx).
    asyncpg.exceptions.OperatorInterventionError,
    ConnectionError,
    TimeoutError,
    OSError,
)
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    *_OUTAGE_CAUSES,
    OperationalError,
    InterfaceError,
)


def _caused_by_outage(error: BaseException | None) -> bool:
    for _ in range(8):  # the driver's chain is a few links long
        if error is None:
            return False
        if isinstance(error, _OUTAGE_CAUSES):
            return True
        error = error.__cause__ or error.__context__
    return False


def _classify_outage(context: ExceptionContext) -> BaseException | None:
    """SQLAlchemy's handle_error hook: a lost connection or an outage raised as a plain
    DBAPIError becomes an OperationalError, so UNAVAILABLE_ERRORS can tell it by type."""
    error = context.sqlalchemy_exception
    if error is None or isinstance(error, OperationalError | InterfaceError):
        return None
    # No connection yet: whatever went wrong, the database could not be reached.
    connecting = context.connection is None or context.is_pre_ping
    if connecting or context.is_disconnect or _caused_by_outage(context.original_exception):
        return OperationalError(
            error.statement,
            error.params,
            context.original_exception,
            hide_parameters=True,
            connection_invalidated=error.connection_invalidated,
        )
    return None


async def _reset_connection(connection: Any) -> None:
    # asyncpg's default reset (advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL) is a round
    # trip per release. Connections of this pool only ever run single statements in
    # autocommit: no locks, listeners or settings to undo; an aborted transaction is the one
    # thing that could linger.
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


@dataclass(slots=True)
class Database:
    """Two pools on one database: SQLAlchemy sessions for writes and anything transactional,
    and plain asyncpg connections for the hot reads (authentication, inbox reads, pages),
    which would otherwise spend more time in the ORM than in Postgres.

    The asyncpg pool needs no pre-ping: a connection the server closed (a restart) is
    noticed by asyncpg and replaced when it is next acquired. Background work (the
    verification worker) has a small asyncpg pool of its own: behind a burst of API requests
    in the shared pool, each claim and each outcome waited its turn, and the worker's slots
    sat idle.
    """

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pool_size: int = 10
    connect_timeout: float = 10.0
    statement_timeout_ms: int = 15_000
    # Called with every query the asyncpg pool runs (tests count statements with this).
    query_loggers: list[Callable[[Any], None]] = field(default_factory=list)
    background_pool_size: int = 4
    _pools: dict[bool, Any] = field(default_factory=dict)
    _pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def connection(self, *, background: bool = False) -> AsyncIterator[Any]:
        """A pooled asyncpg connection (autocommit: one statement, one round trip); from the
        background pool for the worker."""
        started = time.perf_counter()
        try:
            pool = self._pools.get(background) or await self._open_pool(background)
            acquiring = pool.acquire(timeout=self.connect_timeout)
            connection = await acquiring.__aenter__()
        except asyncpg.PostgresError as exc:
            # Refused while connecting (e.g. 55000, the database not accepting connections):
            # whatever Postgres said, it could not be reached.
            raise DatabaseUnreachable(f"{type(exc).__name__} while connecting") from exc
        finally:
            observe.pool_acquired(background, time.perf_counter() - started)
        try:
            yield connection
        finally:
            await acquiring.__aexit__(None, None, None)

    def open_pools(self) -> dict[str, Any]:
        """The pools opened so far, by name ("api", "background"), for their gauges."""
        return {"background" if bg else "api": pool for bg, pool in self._pools.items()}

    async def _open_pool(self, background: bool) -> Any:
        async with self._pool_lock:
            if background not in self._pools:
                self._pools[background] = await asyncpg.create_pool(
                    asyncpg_url(self.url),
                    min_size=1,
                    max_size=self.background_pool_size if background else self.pool_size,
                    timeout=self.connect_timeout,
                    init=self._init_connection,
                    reset=_reset_connection,
                    server_settings={
                        "statement_timeout": str(self.statement_timeout_ms),
                        "application_name": "inboxd-worker" if background else "inboxd",
                    },
                )
            return self._pools[background]

    async def _init_connection(self, connection: Any) -> None:
        # JSONB as Python values, as the ORM's JSONB columns give them.
        await connection.set_type_codec(
            "jsonb",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
        for logger in self.query_loggers:
            connection.add_query_logger(logger)

    async def close_pool(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.close()

    async def dispose(self) -> None:
        await self.close_pool()
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
    event.listen(engine.sync_engine, "handle_error", _classify_outage)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Database(
        url=url,
        engine=engine,
        sessions=sessions,
        pool_size=pool_size,
        connect_timeout=connect_timeout,
        statement_timeout_ms=statement_timeout_ms,
    )


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under a session, in the session's transaction: lets one
    asyncpg-level query serve both the ORM paths and the plain-connection paths."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def older_than(
    at_column: Any, id_column: Any, cursor: tuple[datetime, uuid.UUID]
) -> ColumnElement[bool]:
    """Keyset condition for newest-first pages: rows after ``cursor`` in (at, id) order."""
    at, row_id = cursor
    return or_(at_column < at, and_(at_column == at, id_column < row_id))
