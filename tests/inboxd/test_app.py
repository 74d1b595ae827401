"""Health endpoints, logs, GraphiQL and the exported schema."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from inboxd.app import create_app
from inboxd.logs import configure_logging, redact_text
from inboxd.settings import Settings
from resolvers.state import AppState
from schema import export_sdl
from storage.db import create_database
from tests.conftest import serve_app
from tests.schema.fragments import CREATE, minimal_input

ROOT = Path(__file__).resolve().parents[2]


def test_exported_sdl_matches_the_code():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_sdl(), "schema.graphql is stale: run `inboxd export-schema`"


async def test_healthz_and_readyz(base_url):
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "up"


async def test_readyz_fails_when_the_database_is_unreachable(keyring):
    dead = create_database("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    state = AppState(db=dead, keyring=keyring)
    server, task, url = await serve_app(create_app(Settings(), state))
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "down"
    finally:
        server.should_exit = True
        await task
        await dead.dispose()


async def test_graphiql_is_served_only_when_enabled(base_url, state):
    async with httpx.AsyncClient(base_url=base_url) as http:
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        # Everything the page loads is served by inboxd: it works without internet access.
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/static/") for a in assets)
        for asset in assets:
            assert (await http.get(asset)).status_code == 200
    production = Settings(environment="production")
    assert production.graphiql_enabled is False
    server, task, url = await serve_app(create_app(production, state))
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/graphql", headers={"accept": "text/html"})
            assert "graphiql" not in page.text.lower()
            assert (await http.get("/static/graphiql/graphiql.min.js")).status_code == 404
    finally:
        server.should_exit = True
        await task


async def test_logs_are_json_and_never_hold_secrets(tenant, capfd):
    configure_logging("INFO")
    try:
        password = "Secret-In-Logs-4410"
        await tenant.client(
            CREATE,
            {
                "input": minimal_input(
                    "logs@example.com", smtp={"host": "smtp.example.com", "password": password}
                )
            },
        )
        logging.getLogger("inboxd.test").info("probe", extra={"password": password})
        from inboxd.logs import get_logger

        get_logger("inboxd.test").info(
            "event with secrets",
            password=password,
            authorization=f"Bearer {tenant.key}",
            note=f"login with password={password} key {tenant.key}",
        )
    finally:
        configure_logging("WARNING")
    err = capfd.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and line.get("path") == "/graphql" for line in lines)
    assert any(line.get("event") == "event with secrets" for line in lines)
    assert password not in err
    assert tenant.key not in err


def test_redact_text_scrubs_keys_and_passwords():
    text = (
        "key inbx_0123456789ab_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG password=hunter2 "
        "postgresql://u:pw@host/db"
    )
    scrubbed = redact_text(text)
    assert "abcdefghij" not in scrubbed and "hunter2" not in scrubbed and ":pw@" not in scrubbed
    assert "inbx_0123456789ab" in scrubbed


async def test_legacy_graphql_ws_protocol_is_off_by_default(base_url):
    import websockets

    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-ws"]) as ws:
        # Strawberry accepts then closes with 4406 "Subprotocol not acceptable".
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4406


def test_accepted_websockets_are_not_logged_one_by_one(capfd: pytest.CaptureFixture[str]) -> None:
    import logging

    from inboxd.logs import configure_logging

    configure_logging("INFO")
    try:
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.info('%s - "WebSocket %s" [accepted]', "192.0.2.7:1234", "/graphql")
        uvicorn_log.info('%s - "WebSocket %s" 403', "192.0.2.8:1234", "/graphql")
        uvicorn_log.info("Started server process [%d]", 42)
    finally:
        configure_logging("WARNING")
    err = capfd.readouterr().err
    assert "192.0.2.7" not in err  # one line per subscriber is noise at 10,000 of them
    assert "192.0.2.8" in err and "Started server process" in err  # the rest stays
