"""Floor for B3: ``createEmailInbox`` as a raw Starlette route with asyncpg.

Per request: the API-key check, then one transaction that locks the workspace row (the plan
limit must hold under concurrency, as in inboxd), counts its inboxes, AES-256-GCM-encrypts both
passwords bound to their row and column (inboxd's envelope and associated data), inserts the
inbox (ON CONFLICT on the workspace's email), inserts its connection_test job and NOTIFYs the
workers. It skips what inboxd adds on top: input validation and normalisation, the audit row,
the login-spacing check, and the change events for subscribers.
Environment: INBOXD_BENCH_FLOOR_DATABASE_URL, INBOXD_ENCRYPTION_KEYS (``kid:base64key``).

    python bench/floors/raw_create.py --port 8102
"""

from __future__ import annotations

import base64
import os
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import CREATE
from bench.floors.rawauth import MANAGE, authenticate, key_from, open_pool, serve

STATE: dict[str, Any] = {}

LOCK_SQL = "SELECT max_inboxes, subscription_active FROM workspace WHERE id = $1 FOR UPDATE"
COUNT_SQL = "SELECT count(*) FROM email_inbox WHERE workspace_id = $1"
INSERT_INBOX = """
INSERT INTO email_inbox (
    id, workspace_id, name, email, display_name, active, provider, status,
    smtp_host, smtp_port, smtp_security, smtp_username, smtp_password,
    imap_host, imap_port, imap_security, imap_username, imap_password,
    daily_send_limit, sending_enabled, tags, delete_message_policy, notify_on_new_messages,
    dkim_selectors, error_count, created_at, updated_at, version)
VALUES ($1, $2, $3, $4, $5, true, 'CUSTOM', 'PENDING',
    $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
    15, true, $16, 'DONT_DELETE', false, '{}', 0, $17, $17, 1)
ON CONFLICT (workspace_id, email) DO NOTHING
RETURNING id
"""
INSERT_JOB = """
INSERT INTO connection_test (
    id, inbox_id, workspace_id, state, reason, round_trip, inbox_version, attempts,
    run_after, created_at, version)
VALUES ($1, $2, $3, 'QUEUED', 'CREATED', false, 1, 0, now(), now(), 1)
"""


def _keyring() -> tuple[str, AESGCM]:
    spec = os.environ["INBOXD_ENCRYPTION_KEYS"]
    key_id, _, encoded = [k for k in spec.replace("\n", ",").split(",") if k.strip()][-1].partition(
        ":"
    )
    return key_id.strip(), AESGCM(base64.b64decode(encoded.strip()))


def encrypt(password: str, column: str, row_id: uuid.UUID) -> bytes:
    key_id, cipher = STATE["keyring"]
    nonce = os.urandom(12)
    aad = f"inboxd:email_inbox:{column}:{row_id}".encode()
    kid = key_id.encode()
    return b"v1" + bytes([len(kid)]) + kid + nonce + cipher.encrypt(nonce, password.encode(), aad)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(typename: str, code: str, message: str) -> Response:
    payload = {"__typename": typename, "code": code, "message": message}
    return _json({"data": {"createEmailInbox": payload}})


async def graphql(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if body.get("query") != CREATE:
        return _json({"data": None, "errors": [{"message": "unknown document"}]}, 400)
    data = (body.get("variables") or {})["input"]
    email = str(data["email"]).strip().lower()
    smtp, imap = data["smtp"], data["imap"]
    async with STATE["pool"].acquire() as connection:
        principal = await authenticate(connection, key_from(request.headers), MANAGE)
        if principal is None:
            return _json({"data": None, "errors": [{"message": "A valid API key is required."}]})
        workspace_id = principal["workspace_id"]
        inbox_id, test_id = uuid.uuid4(), uuid.uuid4()
        async with connection.transaction():
            workspace = await connection.fetchrow(LOCK_SQL, workspace_id)
            if not workspace["subscription_active"]:
                return _error("SubscriptionRequired", "SUBSCRIPTION_REQUIRED", "inactive")
            usage = await connection.fetchval(COUNT_SQL, workspace_id)
            if usage >= workspace["max_inboxes"]:
                return _error("InboxLimitReached", "INBOX_LIMIT_REACHED", "limit reached")
            inserted = await connection.fetchval(
                INSERT_INBOX,
                inbox_id,
                workspace_id,
                email,
                email,
                data.get("displayName") or email.partition("@")[0],
                smtp["host"],
                int(smtp["port"]),
                smtp["security"],
                smtp.get("username") or email,
                encrypt(smtp["password"], "smtp_password", inbox_id),
                imap["host"],
                int(imap["port"]),
                imap["security"],
                imap.get("username") or email,
                encrypt(imap.get("password") or smtp["password"], "imap_password", inbox_id),
                list(data.get("tags") or []),
                datetime.now(UTC),
            )
            if inserted is None:
                return _error("DuplicateEmailInbox", "DUPLICATE_EMAIL_INBOX", "duplicate")
            await connection.execute(INSERT_JOB, test_id, inbox_id, workspace_id)
            await connection.execute("NOTIFY inboxd_jobs")
    inbox = {"id": str(inbox_id), "email": email, "status": "PENDING"}
    return _json(
        {"data": {"createEmailInbox": {"__typename": "CreateEmailInboxSuccess", "inbox": inbox}}}
    )


async def healthz(_: Request) -> Response:
    return _json({"status": "ok"})


@asynccontextmanager
async def lifespan(_: Starlette) -> Any:
    STATE["keyring"] = _keyring()
    STATE["pool"] = await open_pool(os.environ["INBOXD_BENCH_FLOOR_DATABASE_URL"], 10)
    try:
        yield
    finally:
        await STATE["pool"].close()


app = Starlette(
    routes=[Route("/graphql", graphql, methods=["POST"]), Route("/healthz", healthz)],
    lifespan=lifespan,
)

if __name__ == "__main__":
    serve(app)
