"""inboxd's own graphql-transport-ws server against graphql-ws's client, the protocol's
reference implementation (tests/js, run by Node.js): what a frontend using graphql-ws, Apollo
or urql (both build on it) meets. Real socket, real app.

Needs Node.js and npm (Debian packages ``nodejs`` and ``npm``); the client libraries come
from the npm registry with ``npm ci`` (pinned by tests/js/package-lock.json) on first use.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.inboxd.test_ws import create_inbox, rename

JS = Path(__file__).resolve().parents[1] / "js"
WATCH = "subscription Watch($id: ID!) { emailInboxStatus(id: $id) { id name version } }"
OTHER = "query Other { viewer { inboxUsage } }"


@pytest.fixture(scope="session")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs Node.js and npm (Debian packages nodejs and npm)")
    if not (JS / "node_modules" / "graphql-ws").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci in tests/js failed (no npm registry?): {done.stderr[-300:]}")
    return node


class Client:
    """One run of tests/js/reference_client.mjs; its lines are what the client saw."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not raw:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode()
            raise AssertionError(f"the reference client ended early: {error}")
        return json.loads(raw)  # type: ignore[no-any-return]

    async def until(self, *events: str) -> dict[str, Any]:
        """The next line whose event is one of ``events`` (pongs and the like in between)."""
        while True:
            seen = await self.line()
            if seen["event"] in events:
                return seen


@asynccontextmanager
async def start(node: str, config: dict[str, Any]) -> AsyncIterator[Client]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS / "reference_client.mjs"),
        json.dumps(config),
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Client(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/graphql"


async def test_graphiql_style_document_streams_the_named_subscription(node, tenant, base_url):
    """Two operations in one document, ``operationName`` picks the subscription; a change
    arrives as ``next``; breaking out completes it; a query and a new subscription then run
    on the same socket; the client's keep-alive pings are answered."""
    inbox_id = await create_inbox(tenant, f"ref-{uuid.uuid4().hex[:6]}@example.com")
    config = {
        "url": ws_url(base_url),
        "key": tenant.key,
        "scenario": "watch",
        "document": f"{OTHER}\n{WATCH}",
        "inboxId": inbox_id,
        "count": 2,
    }
    async with start(node, config) as client:
        first = await client.until("next")
        assert first["result"]["data"]["emailInboxStatus"]["id"] == inbox_id, first
        version = await rename(tenant, inbox_id, "seen by graphql-ws")
        second = await client.until("next")
        watched = second["result"]["data"]["emailInboxStatus"]
        assert watched == {"id": inbox_id, "name": "seen by graphql-ws", "version": version}
        query = await client.until("query")
        assert query["result"] == {"data": {"viewer": {"inboxUsage": 1}}}, query
        again = await client.until("again")
        assert again["result"]["data"]["emailInboxStatus"]["version"] == version
        await client.until("done")
        assert await client.process.wait() == 0


async def test_null_connection_params_are_refused_for_the_key_not_the_message(node, base_url):
    """graphql-ws sends ``"payload": null`` when connectionParams returns null: the protocol
    allows it, so inboxd refuses the missing key (4403, saying so), not the message (4400)."""
    async with start(node, {"url": ws_url(base_url), "scenario": "nullInit"}) as client:
        refused = await client.until("refused", "unexpected")
        assert refused["event"] == "refused", refused
        assert refused["code"] == 4403 and "missing" in refused["reason"].lower(), refused
        await client.until("done")


async def test_an_invalid_operation_is_an_error_and_the_socket_serves_on(node, tenant, base_url):
    config = {"url": ws_url(base_url), "key": tenant.key, "scenario": "invalid"}
    async with start(node, config) as client:
        error = await client.until("error", "unexpected", "closed")
        assert error["event"] == "error", error
        assert "nope" in json.dumps(error["errors"]), error
        query = await client.until("query", "closed")
        assert query["event"] == "query" and "inboxUsage" in query["result"]["data"]["viewer"]
        await client.until("done")
