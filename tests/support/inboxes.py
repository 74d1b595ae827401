"""Inboxes made over GraphQL as a client makes them, for the receiving tests: created on the
mail servers of ``tests.support.mailservers.tls_mail_servers`` and waited for until watched."""

from __future__ import annotations

from typing import Any

from tests.support.waiting import wait_until

CREATE_INBOX = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) {
    __typename
    ... on CreateEmailInboxSuccess { inbox { id } }
    ... on UserError { code message }
  }
}"""
WATCH_STATE = """
query($id: ID!) {
  emailInbox(id: $id) {
    status statusReason
    receiving { state lastError { code message } }
  }
}"""


async def create_watched(
    tenant: Any,
    servers: dict[str, Any],
    user: str,
    password: str,
    *,
    security: str = "TLS",
    states: tuple[str, ...] = ("IDLE", "POLLING"),
    **fields: Any,
) -> str:
    """An inbox of ``user`` sending through ``servers["smtp"]`` (implicit TLS) and receiving
    from ``servers[security]``, created with ``fields`` added to its input, verified and
    watched: its receiving state one of ``states`` (it must never turn FAILED meanwhile)."""
    created = await tenant.client(
        CREATE_INBOX,
        {
            "input": {
                "email": user,
                "smtp": {"host": "127.0.0.1", "port": servers["smtp"].port, "security": "TLS",
                         "password": password},
                "imap": {"host": "127.0.0.1", "port": servers[security].port,
                         "security": security, "password": password},
                **fields,
            }
        },
    )  # fmt: skip
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    inbox_id: str = payload["inbox"]["id"]

    async def watching() -> bool:
        inbox = (await tenant.client(WATCH_STATE, {"id": inbox_id})).data["emailInbox"]
        assert inbox["status"] != "FAILED", inbox
        return inbox["receiving"]["state"] in states

    await wait_until(watching, f"inbox {inbox_id} watched")
    return inbox_id
