"""NUL characters, which Postgres text cannot hold, are the caller's mistake: a typed error
naming the field, never INTERNAL_SERVER_ERROR or SERVICE_UNAVAILABLE (issue 11 point 7)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from graphql import GraphQLError

from schema.pipeline import mask_error
from storage.db import UNAVAILABLE_ERRORS, Database, create_database
from tests.schema.fragments import CREATE, LIST, UPDATE, minimal_input

NUL = "a\x00b"

# Input (as sent) -> the field the ValidationError must name.
CREATE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "description": ({"description": NUL}, "description"),
    "department": ({"department": NUL}, "department"),
    "signature": ({"signature": f"<p>{NUL}</p>"}, "signature"),
    "name": ({"name": NUL}, "name"),
    "displayName": ({"displayName": NUL}, "displayName"),
    "senderInfo": ({"senderInfo": NUL}, "senderInfo"),
    "tag": ({"tags": ["ok", NUL]}, "tags[1]"),
    "replyTo": ({"replyTo": f"re{NUL}@example.com"}, "replyTo"),
    "notificationEmail": (
        {"notifyOnNewMessages": True, "notificationEmail": f"n{NUL}@example.com"},
        "notificationEmail",
    ),
    "dkimSelector": ({"dkimSelectors": [NUL]}, "dkimSelectors[0]"),
    "smtp.username": (
        {"smtp": {"host": "smtp.example.com", "password": "pw-123456", "username": NUL}},
        "smtp.username",
    ),
    "smtp.host": ({"smtp": {"host": f"smtp{NUL}.example.com", "password": "pw"}}, "smtp.host"),
    "smtp.password": (
        {"smtp": {"host": "smtp.example.com", "password": f"pw{NUL}"}},
        "smtp.password",
    ),
    "imap.username": (
        {"imap": {"host": "imap.example.com", "username": NUL}},
        "imap.username",
    ),
    "imap.tlsCertificateSha256": (
        {"imap": {"host": "imap.example.com", "tlsCertificateSha256": NUL}},
        "imap.tlsCertificateSha256",
    ),
}


def fields_of(payload: dict[str, Any]) -> list[str]:
    assert payload["__typename"] == "ValidationError", payload
    return [f["field"] for f in payload["fields"]]


@pytest.mark.parametrize(("extra", "field"), CREATE_CASES.values(), ids=list(CREATE_CASES))
async def test_create_refuses_nul_naming_the_field(tenant, extra: dict[str, Any], field: str):
    response = await tenant.client(CREATE, {"input": {**minimal_input("nul@example.com"), **extra}})

    assert not response.errors, response.errors
    assert field in fields_of(response.data["createEmailInbox"])


async def test_create_refuses_nul_in_the_email(tenant):
    response = await tenant.client(CREATE, {"input": minimal_input(f"nul{NUL}@example.com")})

    assert not response.errors, response.errors
    assert fields_of(response.data["createEmailInbox"]) == ["email"]


@pytest.mark.parametrize(("extra", "field"), CREATE_CASES.values(), ids=list(CREATE_CASES))
async def test_update_refuses_nul_naming_the_field(tenant, extra: dict[str, Any], field: str):
    created = await tenant.client(CREATE, {"input": minimal_input("nul-upd@example.com")})
    inbox = created.data["createEmailInbox"]["inbox"]

    response = await tenant.client(UPDATE, {"id": inbox["id"], "input": extra})

    assert not response.errors, response.errors
    assert field in fields_of(response.data["updateEmailInbox"])
    # Nothing was changed, and the database was never asked to store it.
    again = await tenant.client(UPDATE, {"id": inbox["id"], "input": {"department": "ok"}})
    assert again.data["updateEmailInbox"]["inbox"]["version"] == inbox["version"] + 1


@pytest.mark.parametrize("key", ["search", "department", "tag"])
async def test_filters_refuse_nul_as_bad_user_input(tenant, key: str):
    response = await tenant.client(LIST, {"first": 5, "filter": {key: NUL}})

    assert response.error_codes() == ["BAD_USER_INPUT"]
    error = response.errors[0]
    assert error["extensions"]["fields"] == [
        {"field": f"filter.{key}", "message": "must not contain NUL characters"}
    ]
    assert "unavailable" not in error["message"]


async def test_send_test_email_refuses_nul_in_the_recipient(tenant):
    created = await tenant.client(CREATE, {"input": minimal_input("nul-to@example.com")})
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]

    response = await tenant.client(
        "mutation($id: ID!, $to: String) { sendTestEmail(id: $id, to: $to) { __typename"
        " ... on ValidationError { fields { field } } } }",
        {"id": inbox_id, "to": f"x{NUL}@example.com"},
    )

    assert not response.errors, response.errors
    assert fields_of(response.data["sendTestEmail"]) == ["to"]


def masked_code(error: BaseException) -> str:
    masked = mask_error(GraphQLError("boom", original_error=error), "req-1")
    return str((masked.extensions or {})["code"])


async def caught(db: Database, statement: str, *args: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        async with db.connection() as connection:
            await connection.execute(statement, *args)
    return info.value


async def test_only_an_outage_is_reported_as_service_unavailable(db: Database, database_url: str):
    # What Postgres refuses is a bug to fix (or input to validate), not an outage.
    for refused in (
        await caught(db, "SELECT CAST($1 AS text)", NUL),
        await caught(db, "SELECT 1 / 0"),
    ):
        assert isinstance(refused, asyncpg.PostgresError)
        assert not isinstance(refused, UNAVAILABLE_ERRORS)
        assert masked_code(refused) == "INTERNAL_SERVER_ERROR"

    # A connection lost mid-request and a database that cannot be reached are outages.
    lost = await caught(db, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert isinstance(lost, UNAVAILABLE_ERRORS)
    assert masked_code(lost) == "SERVICE_UNAVAILABLE"
    missing = create_database(database_url.rsplit("/", 1)[0] + "/no_such_db", connect_timeout=2)
    try:
        unreachable = await caught(missing, "SELECT 1")
    finally:
        await missing.dispose()
    assert isinstance(unreachable, UNAVAILABLE_ERRORS)
    assert masked_code(unreachable) == "SERVICE_UNAVAILABLE"
