"""Floor for B1 and B2: a raw Starlette route with asyncpg, no GraphQL, no ORM.

It answers the exact documents the benchmark sends (looked up by their text, like a persisted
query) with the same JSON inboxd returns: for ``emailInbox(id)`` the API-key check and one
SELECT of the inbox by id and workspace; for ``emailInboxes(first: 50)`` the API-key check, the
page SELECT (LIMIT first + 1) and the count(*) for ``totalCount``. JSON is built by hand and
encoded with orjson. Environment: INBOXD_BENCH_FLOOR_DATABASE_URL (postgresql://...).

    python bench/floors/raw_read.py --port 8101
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import INBOX_COLUMNS, LIST_PAGE, READ_ONE, inbox_cursor, inbox_json
from bench.floors.rawauth import VIEW, authenticate, key_from, open_pool, serve

READ_SQL = f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE id = $1 AND workspace_id = $2"
PAGE_SQL = (
    f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE workspace_id = $1 "
    "ORDER BY created_at, id LIMIT $2"
)
COUNT_SQL = "SELECT count(*) FROM email_inbox WHERE workspace_id = $1"
POOL: dict[str, Any] = {}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


UNAUTHENTICATED = {"data": None, "errors": [{"message": "A valid API key is required."}]}


async def read_one(connection: Any, principal: Any, variables: dict[str, Any]) -> dict[str, Any]:
    try:
        inbox_id = uuid.UUID(str(variables["id"]))
    except (KeyError, ValueError):
        return {"data": {"emailInbox": None}}
    row = await connection.fetchrow(READ_SQL, inbox_id, principal["workspace_id"])
    return {"data": {"emailInbox": inbox_json(row) if row else None}}


async def list_page(connection: Any, principal: Any, variables: dict[str, Any]) -> dict[str, Any]:
    first = int(variables.get("first", 20))
    rows = await connection.fetch(PAGE_SQL, principal["workspace_id"], first + 1)
    total = await connection.fetchval(COUNT_SQL, principal["workspace_id"])
    edges = [{"cursor": inbox_cursor(r), "node": inbox_json(r)} for r in rows[:first]]
    return {
        "data": {
            "emailInboxes": {
                "totalCount": total,
                "pageInfo": {
                    "hasNextPage": len(rows) > first,
                    "endCursor": edges[-1]["cursor"] if edges else None,
                },
                "edges": edges,
            }
        }
    }


HANDLERS = {READ_ONE: read_one, LIST_PAGE: list_page}


async def graphql(request: Request) -> Response:
    body = orjson.loads(await request.body())
    handler = HANDLERS.get(body.get("query"))
    if handler is None:
        return _json({"data": None, "errors": [{"message": "unknown document"}]}, 400)
    async with POOL["pool"].acquire() as connection:
        principal = await authenticate(connection, key_from(request.headers), VIEW)
        if principal is None:
            return _json(UNAUTHENTICATED, 401)
        return _json(await handler(connection, principal, body.get("variables") or {}))


async def healthz(_: Request) -> Response:
    return _json({"status": "ok"})


@asynccontextmanager
async def lifespan(_: Starlette) -> Any:
    POOL["pool"] = await open_pool(os.environ["INBOXD_BENCH_FLOOR_DATABASE_URL"], 10)
    try:
        yield
    finally:
        await POOL["pool"].close()


app = Starlette(
    routes=[Route("/graphql", graphql, methods=["POST"]), Route("/healthz", healthz)],
    lifespan=lifespan,
)

if __name__ == "__main__":
    serve(app)
