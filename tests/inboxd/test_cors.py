"""Browser apps on other origins (INBOXD_CORS_ORIGINS): CORS preflights and headers over real
HTTP, and the same allow-list for websocket handshakes."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.inboxd.test_limits import VIEWER, custom_stack
from tests.support.ws import PROTOCOL, WSClient

APP = "https://app.example.com"
EVIL = "https://evil.example.net"


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def acked(client: WSClient, key: str) -> bool:
    await client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
    return (await client.receive())["type"] == "connection_ack"


async def test_preflight_and_responses_carry_headers_for_allowed_origins_only(
    database_url, certs, keyring, make_tenant
):
    tenant = await make_tenant()
    origins = f" {APP}/, https://admin.example.com"  # spaces and a trailing slash are fine
    async with (
        custom_stack(database_url, certs, keyring, cors_origins=origins) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
    ):
        allowed = await http.options("/graphql", headers=preflight(APP))
        refused = await http.options("/graphql", headers=preflight(EVIL))
        answer = await http.post(
            "/graphql",
            json={"query": VIEWER},
            headers={"origin": APP, "authorization": f"Bearer {tenant.key}"},
        )
        foreign = await http.post(
            "/graphql",
            json={"query": VIEWER},
            headers={"origin": EVIL, "authorization": f"Bearer {tenant.key}"},
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers  # keys, never cookies
    assert "access-control-allow-origin" not in refused.headers
    assert answer.status_code == 200 and answer.json()["data"]["viewer"]["inboxUsage"] == 0
    assert answer.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_by_default(base_url):
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.options("/graphql", headers=preflight(APP))
        posted = await http.post("/graphql", json={"query": VIEWER}, headers={"origin": APP})
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in posted.headers


async def test_websocket_origin_is_checked_against_the_list(
    database_url, certs, keyring, make_tenant
):
    tenant = await make_tenant()
    async with custom_stack(database_url, certs, keyring, cors_origins=APP) as stack:
        url = stack.base_url.replace("http://", "ws://") + "/graphql"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, subprotocols=[PROTOCOL], origin=EVIL)
        assert refused.value.response.status_code == 403
        assert b"INBOXD_CORS_ORIGINS" in refused.value.response.body
        assert EVIL.encode() in refused.value.response.body
        # An allowed origin, and a client that sends none (not a browser), are served.
        async with websockets.connect(url, subprotocols=[PROTOCOL], origin=APP) as ws:
            client = WSClient(ws)
            await client.send(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {tenant.key}"}}
            )
            assert (await client.receive())["type"] == "connection_ack"
        plain = await WSClient.connect(stack.base_url, tenant.key)
        await plain.close()


async def test_websockets_from_any_origin_without_a_list(base_url, tenant):
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[PROTOCOL], origin=EVIL) as ws:
        client = WSClient(ws)
        await client.send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {tenant.key}"}}
        )
        assert (await client.receive())["type"] == "connection_ack"
