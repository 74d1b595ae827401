"""The asyncpg pools, the connection type every storage function takes, and the database URL
forms the project uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from storage import observe

if TYPE_CHECKING:
    from asyncpg.connection import LoggedQuery
    from asyncpg.pool import Pool, PoolConnectionProxy

# What every storage function takes: a connection of the pools below, or one opened on its
# own (the event listener, tests). mypy sees asyncpg's types through asyncpg-stubs, and the
# rows of ``storage.rows`` through ``record_class``.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` (what people and asyncpg write) -> SQLAlchemy's asyncpg form, for
    alembic's engine (``storage.migrations.env``)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return urlunsplit(("postgresql+asyncpg", *parts[1:]))
    raise ValueError("the database URL must start with postgresql://")


def asyncpg_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return urlunsplit(("postgresql", *parts[1:]))
    raise ValueError("the database URL must start with postgresql://")


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, *parts[2:]))
    return url


class DatabaseUnreachable(ConnectionError):
    """Postgres refused a new connection (the asyncpg pool's connect)."""


# The database is down or unreachable: an operation may succeed if retried. What Postgres
# refused (a NUL in text, a bad value) is a PostgresError of another class, never among them
# (issue 11 point 7).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # asyncpg's protocol left mid-operation by a backend terminated under it ("cannot switch to
    # state 11; another operation is in progress"): that connection is gone, not the request.
    asyncpg.InternalClientError,
    # Server shutting down or starting, statement timeout (57xxx).
    asyncpg.exceptions.OperatorInterventionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


async def _reset_connection(connection: Connection) -> None:
    # asyncpg's default reset (advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL) is a round
    # trip per release. Connections of this pool run single statements in autocommit or
    # ``connection.transaction()`` blocks: no session locks, listeners or settings to undo;
    # an aborted transaction is the one thing that could linger.
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


@dataclass(slots=True)
class Database:
    """asyncpg pools on one database: every query inboxd runs is SQL text on one of their
    connections, in autocommit (one statement, one round trip) or in
    ``async with connection.transaction():`` where a write needs several statements.

    No pre-ping: a connection the server closed (a restart) is noticed by asyncpg and
    replaced when it is next acquired. Background work (the verification worker) has a small
    pool of its own: behind a burst of API requests in the shared pool, each claim and each
    outcome waited its turn, and the worker's slots sat idle.
    """

    url: str
    pool_size: int = 10
    connect_timeout: float = 10.0
    statement_timeout_ms: int = 15_000
    # Called with every query the pools run (tests count statements with this).
    query_loggers: list[Callable[[LoggedQuery], None]] = field(default_factory=list)
    background_pool_size: int = 4
    _pools: dict[bool, Pool] = field(default_factory=dict)
    _pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @asynccontextmanager
    async def connection(self, *, background: bool = False) -> AsyncIterator[Connection]:
        """A pooled asyncpg connection, from the background pool for the worker."""
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

    def open_pools(self) -> dict[str, Pool]:
        """The pools opened so far, by name ("api", "background"), for their gauges."""
        return {"background" if bg else "api": pool for bg, pool in self._pools.items()}

    async def _open_pool(self, background: bool) -> Pool:
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

    async def _init_connection(self, connection: asyncpg.Connection[asyncpg.Record]) -> None:
        # JSONB as Python values (dicts and lists), both ways.
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


def create_database(
    url: str,
    *,
    pool_size: int = 10,
    background_pool_size: int = 4,
    connect_timeout: float = 10.0,
    statement_timeout_ms: int = 15_000,
) -> Database:
    asyncpg_url(url)  # refuses a URL that is not postgresql://
    return Database(
        url=url,
        pool_size=pool_size,
        background_pool_size=background_pool_size,
        connect_timeout=connect_timeout,
        statement_timeout_ms=statement_timeout_ms,
    )
