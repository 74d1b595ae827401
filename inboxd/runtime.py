"""Where the database and the encryption keys come from, and the first-start bootstrap."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inboxd.settings import Settings
from storage import api_keys, workspaces
from storage.db import Database, create_database
from storage.models import Permission
from storage.secrets import KeyRing

DEFAULT_WORKSPACE = "default"
KEYS_FILE = "encryption.keys"


class ConfigurationError(Exception):
    pass


@dataclass(slots=True)
class Resolved:
    database_url: str
    keyring: KeyRing
    embedded: bool
    notes: list[str]
    server: Any = None  # the pgserver handle, kept alive while the process runs


def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """The embedded Postgres in ``data_dir``, started unless another process runs it.

    pgserver lists the processes using a server in a handle file and stops the server when
    the last of them exits; ``stop_embedded_postgres`` (and pgserver's atexit hook) take this
    process off the list. A process that was killed never does, and its entry would keep the
    server running after everyone left, so dead entries are dropped first.
    """
    pg_dir = (data_dir / "postgres").resolve()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # imported late: only the embedded default needs it
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:  # the lock pgserver holds while it edits the file
            forget_dead_handles(pg_dir / HANDLES_FILE)
        server = pgserver.get_server(str(pg_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri()), server


HANDLES_FILE = ".handle_pids.json"  # pgserver's list of the processes using the server


def forget_dead_handles(path: Path) -> list[int]:
    """Drop the processes that no longer run from pgserver's handle file; returns them."""
    try:
        pids = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return []
    if not isinstance(pids, list):
        return []
    dead = [pid for pid in pids if not _still_running(pid, written)]
    if dead:
        path.write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead


def _still_running(pid: object, listed_by: float) -> bool:
    import psutil  # pgserver's dependency

    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True  # this process (its entry is taken off when it stops the server)
    try:
        process = psutil.Process(pid)
        # A process started after the file was last written got a dead entry's reused pid.
        zombie = process.status() == psutil.STATUS_ZOMBIE
        return not zombie and float(process.create_time()) <= listed_by + 1
    except psutil.Error:
        return False


def stop_embedded_postgres(resolved: Resolved) -> None:
    """Stop the embedded Postgres if this process was the last one using it."""
    if resolved.server is not None:
        resolved.server.cleanup()
        resolved.server = None


def exit_on_sigterm() -> None:
    """SIGTERM exits as SystemExit does (``finally`` blocks and atexit hooks run, so the
    embedded Postgres is stopped), instead of killing the process where it stands."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def load_or_create_keys(data_dir: Path) -> tuple[KeyRing, str | None]:
    path = data_dir / KEYS_FILE
    note = None
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(KeyRing.generate_spec() + "\n")
        note = (
            f"Generated an encryption key into {path} (mode 600). Back it up: without it the "
            "stored passwords cannot be decrypted."
        )
    return KeyRing.parse(path.read_text()), note


def resolve(settings: Settings) -> Resolved:
    notes: list[str] = []
    if settings.database_url:
        if settings.encryption_keys is None:
            raise ConfigurationError(
                "INBOXD_ENCRYPTION_KEYS is required with INBOXD_DATABASE_URL. "
                "Generate a key with `inboxd generate-key`."
            )
        keyring = KeyRing.parse(settings.encryption_keys.get_secret_value())
        return Resolved(settings.database_url, keyring, embedded=False, notes=notes)
    url, server = start_embedded_postgres(settings.data_dir)
    if settings.encryption_keys is not None:
        keyring = KeyRing.parse(settings.encryption_keys.get_secret_value())
    else:
        keyring, note = load_or_create_keys(settings.data_dir)
        if note:
            notes.append(note)
    return Resolved(url, keyring, embedded=True, notes=notes, server=server)


def open_database(settings: Settings, url: str) -> Database:
    return create_database(
        url,
        pool_size=settings.db_pool_size,
        # The sending worker's slots and its Sent copies each take a connection a few times
        # per message: with fewer, they queue for one (B13: p90 wait 8 ms with 4).
        background_pool_size=max(4, settings.send_concurrency),
        connect_timeout=settings.db_connect_timeout,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )


async def bootstrap_default_workspace(db: Database) -> str | None:
    """First start only: a default workspace and an admin key. Returns the key, or None."""
    async with db.connection() as connection, connection.transaction():
        if await workspaces.find_workspace(connection, DEFAULT_WORKSPACE) is not None:
            return None
        workspace = await workspaces.create_workspace(
            connection, DEFAULT_WORKSPACE, max_inboxes=100
        )
        _, key = await api_keys.create_api_key(
            connection,
            workspace.id,
            [Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX],
            name="admin (created on first start)",
        )
        return key


def stop_on_signals() -> asyncio.Event:
    """SIGTERM and SIGINT set the returned event, handled by the loop between callbacks.

    ``exit_on_sigterm``'s SystemExit is raised wherever the main thread stands: inside an
    asyncpg protocol callback it leaves a connection half-read that the orderly stop then
    waits on forever. A second signal while stopping exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


def log_pending_tasks(log: Any) -> None:
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    log.error("stop timed out", pending=[t.get_name() for t in pending][:50])
