"""An OAuth inbox receiving mail from a real Dovecot whose ``oauth2`` passdb checks each token at
the loopback provider: connected with startOAuthConnection, verified, watched, a delivered
message stored; a token Dovecot refuses when the watcher reconnects is refreshed once and the
login tried once more. Skipped, naming the packages, where Dovecot is not installed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.secrets import KeyRing
from tests.conftest import Tenant, verifier_on
from tests.inboxd.oauth_support import OAuthWorld
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.mailservers import MailCerts
from tests.support.oauth_provider import OAuthProvider
from tests.support.waiting import wait_until

USER = "olga@example.test"
RECEIVING = """
query($id: ID!) {
  emailInbox(id: $id) { status statusReason version receiving { state lastError { code } } }
}"""
MESSAGES = "query($id: ID!) { messages(inboxId: $id, first: 20) { edges { node { subject } } } }"
RENAME = """
mutation($id: ID!, $name: String!) {
  updateEmailInbox(id: $id, input: {displayName: $name}) {
    __typename ... on UpdateEmailInboxSuccess { inbox { version } }
  }
}"""


def mail(subject: str) -> bytes:
    return (
        f"From: Sender <sender@sender.test>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@sender.test>\r\n\r\nHello.\r\n"
    ).encode()


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthProvider]:
    with OAuthProvider() as running:
        running.add_user(USER)
        yield running


@pytest.fixture(scope="module")
def dovecot(certs: MailCerts, provider: OAuthProvider) -> Iterator[Dovecot]:
    require_dovecot()
    users = {USER: "unused-password-1"}
    with Dovecot(users, certs, oauth2_introspection_url=provider.introspection_url) as server:
        yield server


@pytest.fixture(scope="module")
async def world(
    dovecot: Dovecot,
    provider: OAuthProvider,
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
) -> AsyncIterator[OAuthWorld]:
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        receiving_enabled=True,
        # Dovecot's auth process asks the provider over HTTP: more than a loopback round trip.
        imap_timeout=20.0,
        smtp_timeout=20.0,
        oauth_google_authorize_url=provider.authorize_url,
        oauth_google_token_url=provider.token_url,
        oauth_google_userinfo_url=provider.userinfo_url,
    ) as verifier:
        client = provider.register_client([f"{verifier.stack.base_url}/oauth/callback"])
        yield OAuthWorld(verifier, provider, client)


async def state_of(tenant: Tenant, inbox_id: str) -> dict[str, Any]:
    inbox: dict[str, Any] = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    return inbox


async def watched(tenant: Tenant, inbox_id: str, dovecot: Dovecot) -> dict[str, Any]:
    async def idle() -> dict[str, Any] | None:
        inbox = await state_of(tenant, inbox_id)
        assert inbox["status"] != "FAILED", (inbox, dovecot.log())
        return inbox if inbox["receiving"]["state"] == "IDLE" else None

    return await wait_until(idle, f"inbox {inbox_id} watched in IDLE", timeout=60)


async def stored(tenant: Tenant, inbox_id: str, subject: str) -> None:
    async def there() -> bool:
        edges = (await tenant.client(MESSAGES, {"id": inbox_id})).data["messages"]["edges"]
        return subject in {e["node"]["subject"] for e in edges}

    await wait_until(there, f"{subject} stored", timeout=60)


async def test_an_oauth_inbox_receives_and_survives_a_refused_token(
    world: OAuthWorld, dovecot: Dovecot, provider: OAuthProvider
) -> None:
    tenant = await world.tenant_with_app()
    inbox_id = await world.connect(
        tenant,
        email=USER,
        smtp={"host": "127.0.0.1", "port": dovecot.submission_port, "security": "STARTTLS"},
        imap={"host": "127.0.0.1", "port": dovecot.imaps_port, "security": "TLS"},
    )
    await watched(tenant, inbox_id, dovecot)
    dovecot.deliver(USER, mail("first-over-oauth"))
    await stored(tenant, inbox_id, "first-over-oauth")

    # The provider ends the token early; a settings change makes the watcher log in again.
    token = await world.logins.access_token(await world.row(tenant, inbox_id))
    provider.expire_access_token(token.reveal())
    before = provider.token_requests["refresh_token"]
    version = (await state_of(tenant, inbox_id))["version"]
    renamed = await tenant.client(RENAME, {"id": inbox_id, "name": "Olga"})
    assert renamed.data["updateEmailInbox"]["inbox"]["version"] == version + 1

    async def refreshed() -> bool:
        return provider.token_requests["refresh_token"] > before

    await wait_until(refreshed, "the refused token refreshed", timeout=60)
    await watched(tenant, inbox_id, dovecot)
    dovecot.deliver(USER, mail("second-over-oauth"))
    await stored(tenant, inbox_id, "second-over-oauth")
    assert provider.token_requests["refresh_token"] == before + 1
    assert (await state_of(tenant, inbox_id))["status"] == "ACTIVE"
