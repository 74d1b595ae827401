"""`createEmailInbox` fills in what was omitted the way the README says: the IMAP host from the
SMTP host's name, when there is a name to derive it from; a provider preset's server only
where the input leaves it open; port and security from each other."""

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


@pytest.mark.parametrize(
    ("given", "smtp"),
    [
        (
            {"smtp": {"host": "smtp.company.com", "password": "pw"}},
            ("smtp.company.com", 587, "STARTTLS"),
        ),
        ({"provider": "GMAIL", "password": "pw"}, ("smtp.gmail.com", 465, "TLS")),
        # The preset's port and security belong to the preset's host, not to one given.
        (
            {"provider": "GMAIL", "smtp": {"host": "relay.company.com", "password": "pw"}},
            ("relay.company.com", 587, "STARTTLS"),
        ),
        # A port given keeps the preset's host, and its security follows the port.
        (
            {"provider": "GMAIL", "smtp": {"port": 587, "password": "pw"}},
            ("smtp.gmail.com", 587, "STARTTLS"),
        ),
    ],
)
async def test_what_a_preset_and_the_defaults_fill_in(
    tenant: Tenant, given: dict[str, object], smtp: tuple[str, int, str]
) -> None:
    response = await tenant.client(CREATE, {"input": {"email": "fill@company.com", **given}})
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    shown = payload["inbox"]["smtp"]
    assert (shown["host"], shown["port"], shown["security"]) == smtp


async def test_an_imap_host_given_alone_gets_implicit_tls(tenant: Tenant) -> None:
    response = await tenant.client(
        CREATE,
        {
            "input": {
                "email": "alone@company.com",
                "smtp": {"host": "smtp.company.com", "password": "pw"},
                "imap": {"host": "mailbox.other.com"},
            }
        },
    )
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    imap = payload["inbox"]["imap"]
    assert (imap["host"], imap["port"], imap["security"]) == ("mailbox.other.com", 993, "TLS")
