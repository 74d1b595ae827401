"""What every floor does first: the same API-key check inboxd makes, written by hand.

``inbx_<12-char prefix>_<secret>``: one indexed SELECT by prefix, a constant-time compare of
SHA-256(key) with the stored hash, the revocation and permission checks, and the same
``last_used_at`` touch (at most once a minute).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

TOUCH_INTERVAL = timedelta(seconds=60)
AUTH_SQL = (
    "SELECT id, workspace_id, key_hash, permissions, revoked_at, last_used_at "
    "FROM api_key WHERE prefix = $1"
)
TOUCH_SQL = "UPDATE api_key SET last_used_at = $1 WHERE id = $2"
VIEW = {"view-email-inbox", "manage-email-inbox"}
MANAGE = {"manage-email-inbox"}


def key_from(headers: Any) -> str | None:
    value = headers.get("authorization")
    if value:
        scheme, _, rest = value.partition(" ")
        return rest.strip() if scheme.lower() == "bearer" else value.strip()
    return headers.get("x-api-key")


def prefix_of(key: str) -> str | None:
    if not key.startswith("inbx_"):
        return None
    prefix, sep, secret = key[5:].partition("_")
    if not sep or len(prefix) != 12 or len(secret) < 32:
        return None
    return prefix


async def authenticate(connection: Any, key: str | None, needs: set[str]) -> Any:
    """The api_key row if ``key`` is valid, unrevoked and carries one of ``needs``; else None."""
    prefix = prefix_of(key) if key else None
    if prefix is None or key is None:
        return None
    row = await connection.fetchrow(AUTH_SQL, prefix)
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(row["key_hash"], hashlib.sha256(key.encode()).digest()):
        return None
    if not needs & set(row["permissions"]):
        return None
    now = datetime.now(UTC)
    if row["last_used_at"] is None or now - row["last_used_at"] > TOUCH_INTERVAL:
        await connection.execute(TOUCH_SQL, now, row["id"])
    return row


def serve(app: Any, argv: list[str] | None = None) -> None:
    """``python FLOOR.py --port P``: one process, uvloop + httptools, like inboxd."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


async def open_pool(url: str, size: int) -> Any:
    """An ordinary asyncpg pool (default settings), as big as inboxd's (pool + overflow)."""
    import asyncpg

    return await asyncpg.create_pool(url, min_size=size, max_size=2 * size, timeout=10)
