"""Errors about a document or its variables: no "did you mean" hints (they map the schema for
whoever probes it) and no input value quoted back (a misspelled input field once echoed the
whole object, password included). Through the HTTP API, as a client sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Tenant

SECRET = "secret123"
FILTERED = "query($f: EmailInboxFilter) { emailInboxes(first: 1, filter: $f) { totalCount } }"
CREATE_VARS = "mutation($i: CreateEmailInboxInput!) { createEmailInbox(input: $i) { __typename } }"


def server(**fields: Any) -> dict[str, Any]:
    return {"host": "mail.example.com", "port": 465, "username": "u", "password": SECRET, **fields}


def misspelled_server(**fields: Any) -> dict[str, Any]:
    fields = server(**fields)
    fields["hots"] = fields.pop("host")
    return fields


CASES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    (
        "type",
        "query($f: EmailInboxFiltr) { emailInboxes(first: 1, filter: $f) { totalCount } }",
        None,
        "Unknown type 'EmailInboxFiltr'",
    ),
    (
        "enum value",
        "{ emailInboxes(first: 1, filter: {status: PENDNG}) { totalCount } }",
        None,
        "PENDNG",
    ),
    ("enum value in variables", FILTERED, {"f": {"status": "PENDNG"}}, "PENDNG"),
    ("input field in variables", FILTERED, {"f": {"stauts": "PENDING"}}, "stauts"),
    ("argument", "{ emailInboxes(frist: 1) { totalCount } }", None, "frist"),
    ("field", "{ emailInbox(id: 1) { smtp { passwrd } } }", None, "passwrd"),
    (
        "input field of a literal",
        'mutation { createEmailInbox(input: {email: "a@example.com", name: "n", '
        'smtp: {hots: "a", port: 1, username: "u", password: "secret123"}, '
        'imap: {host: "a", port: 1, username: "u", password: "secret123"}}) { __typename } }',
        None,
        "hots",
    ),
    (
        "input field in variables, secret beside it",
        CREATE_VARS,
        {
            "i": {
                "email": "a@example.com",
                "name": "n",
                "smtp": misspelled_server(),
                "imap": server(),
            }
        },
        "hots",
    ),
    (
        "secret of the wrong type",
        CREATE_VARS,
        {
            "i": {
                "email": "a@example.com",
                "name": "n",
                "smtp": server(password=12345),
                "imap": server(),
            }
        },
        "password",
    ),
]


@pytest.mark.parametrize(
    ("query", "variables", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_errors_name_the_mistake_without_hints_or_values(
    tenant: Tenant, query: str, variables: dict[str, Any] | None, named: str
) -> None:
    response = await tenant.client(query, variables)
    text = json.dumps(response.body)
    assert response.errors, response.body
    assert named in text, "the error must still say what is wrong"
    assert "Did you mean" not in text and "did you mean" not in text
    assert SECRET not in text and "12345" not in text
    assert "found:" not in text and "found {" not in text
