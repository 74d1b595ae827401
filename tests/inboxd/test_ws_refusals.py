"""A websocket refused at connection_init is closed with 4403 and a reason that says what is
wrong with the key (missing, malformed, not recognised, revoked), never which workspace or
prefix exists."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from storage import api_keys
from storage.api_keys import split_key
from tests.inboxd.test_limits import custom_stack
from tests.support.ws import PROTOCOL, WSClient


async def refusal(base_url: str, payload: dict[str, str]) -> tuple[int | None, str]:
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[PROTOCOL], compression=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code, ws.close_reason or ""


async def test_close_reason_says_what_is_wrong_with_the_key(tenant, db, base_url, make_tenant):
    other = await make_tenant()
    prefix = split_key(other.key)
    revoked = await tenant.key_with(db, *api_keys.Permission)
    async with db.connection() as connection:
        await api_keys.revoke_api_key(connection, revoked)

    code, missing = await refusal(base_url, {})
    assert code == 4403 and missing.startswith("API key missing")
    assert "connection_init" in missing and "authorization" in missing

    code, malformed = await refusal(base_url, {"authorization": "Bearer hello"})
    assert code == 4403 and malformed.startswith("API key malformed")

    # A real key's prefix with a wrong secret reads exactly like a key made up entirely.
    wrong_secret = f"inbx_{prefix}_{secrets.token_urlsafe(32)}"
    made_up = f"inbx_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    code, unknown = await refusal(base_url, {"authorization": f"Bearer {wrong_secret}"})
    assert code == 4403 and unknown.startswith("API key not recognised")
    assert (await refusal(base_url, {"authorization": f"Bearer {made_up}"})) == (4403, unknown)

    code, gone = await refusal(base_url, {"authorization": f"Bearer {revoked}"})
    assert code == 4403 and gone.startswith("API key revoked")

    for reason in (missing, malformed, unknown, gone):
        assert str(prefix) not in reason and other.workspace.name not in reason
        assert tenant.workspace.name not in reason and "workspace" not in reason.lower()
    # The key that works still does.
    ws = await WSClient.connect(base_url, tenant.key)
    await ws.close()


async def test_connection_limit_reason(database_url, certs, keyring, make_tenant):
    tenant = await make_tenant()
    async with custom_stack(database_url, certs, keyring, ws_max_connections_per_key=1) as stack:
        first = await WSClient.connect(stack.base_url, tenant.key)
        try:
            code, reason = await refusal(stack.base_url, {"authorization": f"Bearer {tenant.key}"})
            assert code == 4403 and "Too many connections for this API key" in reason
        finally:
            await first.close()


async def test_legacy_protocol_gives_the_same_reason(database_url, certs, keyring):
    async with custom_stack(database_url, certs, keyring, legacy_graphql_ws=True) as stack:
        url = stack.base_url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-ws"], compression=None) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "connection_error"
        assert message["payload"]["message"].startswith("API key missing")
