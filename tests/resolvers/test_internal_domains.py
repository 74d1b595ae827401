"""Addresses on internal domains (alice@example.test, .local, .internal, .lan) are accepted
when the server allows private hosts, and refused by default (issue 11 point 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resolvers.validation import Problems, normalize_email
from storage.secrets import KeyRing
from tests.conftest import Tenant, Verifier, verifier_on
from tests.schema.fragments import CREATE, minimal_input
from tests.support.mailservers import MailCerts

INTERNAL = [
    "alice@example.test",
    "alice@mail.corp.local",
    "Alice@Corp.Internal",
    "alice@office.lan",
    "alice@nas.home.arpa",
]
NEVER = ["alice@example.invalid", "alice@host.localhost", "alice@hidden.onion"]


@pytest.fixture(scope="module")
async def public_only(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    # The default setting: INBOXD_ALLOW_PRIVATE_HOSTS unset (false).
    async with verifier_on(
        pg_server[0], certs, keyring, worker=False, allow_private_hosts=False
    ) as running:
        yield running


async def create(tenant: Tenant, email: str, **extra: object) -> dict[str, object]:
    response = await tenant.client(CREATE, {"input": minimal_input(email, **extra)})
    assert not response.errors, response.errors
    payload: dict[str, object] = response.data["createEmailInbox"]
    return payload


@pytest.mark.parametrize("email", INTERNAL)
async def test_internal_domains_are_accepted_when_private_hosts_are_allowed(
    tenant: Tenant, email: str
) -> None:
    # The session's server runs with INBOXD_ALLOW_PRIVATE_HOSTS=true.
    domain = email.rpartition("@")[2]
    created = await create(tenant, email, replyTo=f"replies@{domain}")

    assert created["__typename"] == "CreateEmailInboxSuccess", created
    inbox = created["inbox"]
    assert isinstance(inbox, dict)
    assert inbox["email"] == email.lower()
    assert inbox["replyTo"] == f"replies@{domain}".lower()


@pytest.mark.parametrize("email", INTERNAL)
async def test_internal_domains_are_refused_by_default(public_only: Verifier, email: str) -> None:
    tenant = await public_only.tenant()
    created = await create(tenant, email)

    assert created["__typename"] == "ValidationError", created
    issues = {f["field"]: f["message"] for f in created["fields"]}  # type: ignore[attr-defined]
    assert "INBOXD_ALLOW_PRIVATE_HOSTS=true" in issues["email"]
    # A public address is still fine on the same server.
    assert (await create(tenant, "alice@example.com"))["__typename"] == "CreateEmailInboxSuccess"


@pytest.mark.parametrize("email", NEVER)
@pytest.mark.parametrize("allow_private", [False, True])
def test_names_that_are_no_mail_domain_stay_refused(email: str, allow_private: bool) -> None:
    problems = Problems()

    assert normalize_email(email, "email", problems, allow_private=allow_private) is None
    assert [issue.field for issue in problems.errors] == ["email"]


def test_an_internal_address_keeps_its_own_domain() -> None:
    problems = Problems()
    normalized = normalize_email("Bob.Smith@Büro.Corp.LOCAL", "email", problems, allow_private=True)

    assert problems.errors == []
    assert normalized == "bob.smith@büro.corp.local"
