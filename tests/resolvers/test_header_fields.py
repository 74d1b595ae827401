"""Fields that reach a mail header refuse control characters, also encoded as RFC 2047
words, through the GraphQL API (issue 11 point 2)."""

from __future__ import annotations

import pytest

from tests.mail.test_message_headers import HOSTILE, PAY
from tests.schema.fragments import CREATE, UPDATE, minimal_input

HEADER_FIELDS = ["displayName", "senderInfo", "name"]


def field_errors(payload: dict[str, object]) -> dict[str, str]:
    assert payload["__typename"] == "ValidationError", payload
    return {f["field"]: f["message"] for f in payload["fields"]}  # type: ignore[attr-defined, index]


@pytest.mark.parametrize("field", HEADER_FIELDS)
async def test_create_refuses_the_reported_payload_naming_the_field(tenant, field: str) -> None:
    response = await tenant.client(
        CREATE, {"input": minimal_input("pay@example.com", **{field: PAY})}
    )

    assert not response.errors
    errors = field_errors(response.data["createEmailInbox"])
    assert list(errors) == [field]
    assert "control characters" in errors[field] and "encoded words" in errors[field]


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_create_refuses_every_encoded_shape_in_the_display_name(tenant, name: str) -> None:
    response = await tenant.client(
        CREATE, {"input": minimal_input("shape@example.com", displayName=name)}
    )

    assert list(field_errors(response.data["createEmailInbox"])) == ["displayName"]


@pytest.mark.parametrize("field", HEADER_FIELDS)
async def test_update_refuses_the_payload_naming_the_field(tenant, field: str) -> None:
    created = await tenant.client(CREATE, {"input": minimal_input(f"upd-{field}@example.com")})
    inbox = created.data["createEmailInbox"]["inbox"]

    response = await tenant.client(UPDATE, {"id": inbox["id"], "input": {field: PAY}})

    assert not response.errors
    assert list(field_errors(response.data["updateEmailInbox"])) == [field]


async def test_ordinary_names_are_accepted(tenant) -> None:
    values = {
        "displayName": "=?utf-8?q?J=C3=B6rg_M=C3=BCller?=",
        "senderInfo": "Jörg Müller, Support (EU)",
        "name": "Ünïcödé 名前",
    }
    response = await tenant.client(CREATE, {"input": minimal_input("ok@example.com", **values)})

    created = response.data["createEmailInbox"]
    assert created["__typename"] == "CreateEmailInboxSuccess", created
    assert {key: created["inbox"][key] for key in values} == values
