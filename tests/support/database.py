"""A throwaway database per test run: on the server named by INBOXD_TEST_DATABASE_URL, or on an
embedded Postgres (pgserver) when that is unset, so the suite needs nothing installed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ENV = "INBOXD_TEST_DATABASE_URL"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def server_url(tmp: Path) -> Iterator[tuple[str, Path | None]]:
    """The admin URL of a Postgres server, and pgserver's data dir if embedded."""
    configured = os.environ.get(ENV)
    if configured:
        yield configured, None
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="delete")
    try:
        yield str(server.get_uri()), tmp / "pg"
    finally:
        server.cleanup()


async def create_scratch(admin_url: str) -> str:
    name = f"inboxd_test_{secrets.token_hex(4)}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


async def drop_scratch(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"inboxd_test_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class EmbeddedPostgres:
    """A private pgserver instance that a test may stop and start (never the machine's server)."""

    def __init__(self, directory: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self.server = pgserver.get_server(str(directory), cleanup_mode="delete")
        self.pgdata = Path(self.server.pgdata)
        self.url = str(self.server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: "fast" (clients cut, a checkpoint), or "immediate" (as a
        crash: no checkpoint, recovery at the next start)."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        socket_dir = str(self.pgdata)
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def close(self) -> None:
        """Stops the server, then lets pgserver delete it. Stopped here first: after a test's
        ``stop``/``start`` the postmaster is one pgserver did not start, and its ``cleanup``
        could leave it running (the suite's last check then found it)."""
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("fast")
        with contextlib.suppress(Exception):
            self.server.cleanup()  # nothing left to stop; the session's check removes the rest
