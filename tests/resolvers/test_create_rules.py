"""`createEmailInbox` fills in what was omitted the way the README says: the IMAP host from the
SMTP host's name, when there is a name to derive it from."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant
from tests.schema.fragments import CREATE


@pytest.mark.parametrize(
    ("smtp_host", "imap_host"),
    [
        ("smtp.company.com", "imap.company.com"),
        ("smtp-mail.outlook.example", "imap.outlook.example"),
        ("mail.company.com", "imap.company.com"),
        ("outgoing.mail.company.com", "imap.mail.company.com"),
    ],
)
async def test_imap_host_is_derived_from_the_smtp_host(
    tenant: Tenant, smtp_host: str, imap_host: str
) -> None:
    response = await tenant.client(
        CREATE,
        {
            "input": {
                "email": f"derive@{smtp_host}",
                "smtp": {"host": smtp_host, "password": "app-password-1"},
            }
        },
    )
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    assert payload["inbox"]["imap"]["host"] == imap_host
    assert payload["inbox"]["imap"]["port"] == 993
    assert payload["inbox"]["imap"]["security"] == "TLS"


@pytest.mark.parametrize("smtp_host", ["smtp.com", "relay.company.com", "company.com"])
async def test_a_host_with_nothing_to_swap_asks_for_the_imap_host(
    tenant: Tenant, smtp_host: str
) -> None:
    response = await tenant.client(
        CREATE,
        {"input": {"email": "x@example.com", "smtp": {"host": smtp_host, "password": "pw"}}},
    )
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "ValidationError", payload
    assert [f["field"] for f in payload["fields"]] == ["imap.host"]


async def test_smtp_without_a_host_names_the_host(tenant: Tenant) -> None:
    response = await tenant.client(
        CREATE, {"input": {"email": "x@example.com", "smtp": {"port": 587, "password": "pw"}}}
    )
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "ValidationError", payload
    assert [f["field"] for f in payload["fields"]] == ["smtp.host"]
