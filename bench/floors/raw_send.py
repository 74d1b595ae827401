"""Floor for B11: ``sendEmail`` accepted into the outbox, as a raw Starlette route with asyncpg.

Per request: the API-key check, then one transaction: the inbox read (its workspace, status,
active and sendingEnabled flags, daily limit), the day's count raised under the limit (the
same ``send_count`` upsert as inboxd's, row-locked per inbox and day), the ``outgoing_message``
row inserted with the same columns and values, and NOTIFY to wake the workers. It skips what
inboxd adds on top: input validation and address parsing, the per-minute rate check, composing
the message once to check it, the idempotency lookup, the audit row and the OUTGOING_CHANGED
event for subscribers.
Environment: INBOXD_BENCH_FLOOR_DATABASE_URL.

    python bench/floors/raw_send.py --port 8103
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.floors.rawauth import MANAGE, authenticate, key_from, open_pool, serve

STATE: dict[str, Any] = {}

# The document B11 sends (bench/sending.py SEND_B11): the floor answers only this one.
SEND = (
    "mutation Send($inboxId: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $inboxId, "
    "input: $input) { __typename ... on SendEmailSuccess { outgoingMessage { id state "
    "messageId } } ... on UserError { code message } } }"
)
INBOX_SQL = (
    "SELECT email, status, active, sending_enabled, daily_send_limit FROM email_inbox "
    "WHERE id = $1 AND workspace_id = $2"
)
COUNT_SQL = """
    INSERT INTO send_count AS c (inbox_id, day, count) VALUES ($1, $2, 1)
    ON CONFLICT (inbox_id, day) DO UPDATE SET count = c.count + 1 WHERE c.count < $3
    RETURNING count
"""
INSERT_SQL = """
    INSERT INTO outgoing_message (
        id, workspace_id, inbox_id, state, to_addresses, cc_addresses, bcc_addresses,
        subject, text_body, html_body, headers, attachments, reply_to_message_id,
        in_reply_to, reference_ids, message_id, idempotency_key, send_at, count_day,
        attempts, next_attempt_at, refused, created_at, updated_at, version)
    VALUES ($1, $2, $3, 'QUEUED', $4::jsonb, '[]'::jsonb, '[]'::jsonb, $5, $6, NULL,
            '{}'::jsonb, '[]'::jsonb, NULL, NULL, '{}', $7, NULL, NULL, $8, 0, now(),
            '{}'::jsonb, now(), now(), 1)
"""


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(typename: str, code: str, message: str) -> Response:
    payload = {"__typename": typename, "code": code, "message": message}
    return _json({"data": {"sendEmail": payload}})


def _address(raw: str) -> dict[str, Any]:
    """``Name <a@b>`` or ``a@b``, split by hand (inboxd parses with the header registry)."""
    if raw.endswith(">") and "<" in raw:
        name, _, address = raw[:-1].rpartition("<")
        return {"name": name.strip() or None, "address": address.strip().lower()}
    return {"name": None, "address": raw.strip().lower()}


async def graphql(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if body.get("query") != SEND:
        return _json({"data": None, "errors": [{"message": "unknown document"}]}, 400)
    variables = body.get("variables") or {}
    inbox_id = uuid.UUID(variables["inboxId"])
    data = variables["input"]
    to = orjson.dumps([_address(a) for a in data["to"]]).decode()
    async with STATE["pool"].acquire() as connection:
        principal = await authenticate(connection, key_from(request.headers), MANAGE)
        if principal is None:
            return _json({"data": None, "errors": [{"message": "A valid API key is required."}]})
        outgoing_id = uuid.uuid4()
        async with connection.transaction():
            inbox = await connection.fetchrow(INBOX_SQL, inbox_id, principal["workspace_id"])
            if inbox is None:
                return _error("NotFound", "NOT_FOUND", "no such inbox")
            if inbox["status"] != "ACTIVE" or not inbox["active"] or not inbox["sending_enabled"]:
                return _error("InboxNotActive", "INBOX_NOT_ACTIVE", "not active")
            day = datetime.now(UTC).date()
            counted = await connection.fetchval(COUNT_SQL, inbox_id, day, inbox["daily_send_limit"])
            if counted is None:
                return _error("DailySendLimitReached", "DAILY_SEND_LIMIT_REACHED", "limit")
            message_id = f"<{uuid.uuid4().hex}@{inbox['email'].rpartition('@')[2]}>"
            await connection.execute(
                INSERT_SQL,
                outgoing_id,
                principal["workspace_id"],
                inbox_id,
                to,
                data.get("subject"),
                data.get("text"),
                message_id,
                day,
            )
            await connection.execute("NOTIFY inboxd_jobs")
    outgoing = {"id": str(outgoing_id), "state": "QUEUED", "messageId": message_id}
    return _json(
        {"data": {"sendEmail": {"__typename": "SendEmailSuccess", "outgoingMessage": outgoing}}}
    )


async def healthz(_: Request) -> Response:
    return _json({"status": "ok"})


@asynccontextmanager
async def lifespan(_: Starlette) -> Any:
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
