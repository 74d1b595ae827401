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
from tests.conftest import Tenant
from tests.inboxd.oauth_support import OAuthWorld, oauth_world_on
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.mailservers import MailCerts
from tests.support.oauth_provider import OAuthProvider
from tests.support.waiting import wait_until

USER = "olga@example.test"
REVOKED = "petra@example.test"  # the account whose consent is withdrawn, then given again
LONG = "rosa@example.test"  # a session that outlives its access token
RECEIVING = """
query($id: ID!) {
  emailInbox(id: $id) {
    status statusReason version errorCount receiving { state lastError { code } }
  }
}"""
MESSAGES = "query($id: ID!) { messages(inboxId: $id, first: 20) { edges { node { subject } } } }"
RENAME = """
mutation($id: ID!, $name: String!) {
  updateEmailInbox(id: $id, input: {displayName: $name}) {
    __typename ... on UpdateEmailInboxSuccess { inbox { version } }
  }
}"""


def mail(subject: str, to: str = USER) -> bytes:
    return (
        f"From: Sender <sender@sender.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@sender.test>\r\n\r\nHello.\r\n"
    ).encode()


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthProvider]:
    with OAuthProvider() as running:
        running.add_user(USER)
        running.add_user(REVOKED)
        running.add_user(LONG)
        yield running


@pytest.fixture(scope="module")
def dovecot(certs: MailCerts, provider: OAuthProvider) -> Iterator[Dovecot]:
    require_dovecot()
    users = {USER: "unused-password-1", REVOKED: "unused-password-2", LONG: "unused-3"}
    with Dovecot(users, certs, oauth2_introspection_url=provider.introspection_url) as server:
        yield server


# The stacks' settings: receiving on; Dovecot's auth process asks the provider over HTTP, more
# than a loopback round trip.
STACK: dict[str, Any] = {"receiving_enabled": True, "imap_timeout": 20.0, "smtp_timeout": 20.0}


@pytest.fixture(scope="module")
async def world(
    dovecot: Dovecot,
    provider: OAuthProvider,
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
) -> AsyncIterator[OAuthWorld]:
    async with oauth_world_on(provider, pg_server[0], certs, keyring, **STACK) as world:
        yield world


async def state_of(tenant: Tenant, inbox_id: str) -> dict[str, Any]:
    inbox: dict[str, Any] = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    return inbox


async def watched(tenant: Tenant, inbox_id: str, dovecot: Dovecot) -> dict[str, Any]:
    async def idle() -> dict[str, Any] | None:
        inbox = await state_of(tenant, inbox_id)
        assert inbox["status"] != "FAILED", (inbox, dovecot.log())
        return inbox if inbox["receiving"]["state"] == "IDLE" else None

    return await wait_until(idle, f"inbox {inbox_id} watched in IDLE", timeout=60)


async def subjects(tenant: Tenant, inbox_id: str) -> list[str]:
    edges = (await tenant.client(MESSAGES, {"id": inbox_id})).data["messages"]["edges"]
    return [e["node"]["subject"] for e in edges]


async def stored(tenant: Tenant, inbox_id: str, subject: str) -> None:
    async def there() -> bool:
        return subject in await subjects(tenant, inbox_id)

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


async def test_a_revoked_account_connected_again_loses_nothing(
    world: OAuthWorld, dovecot: Dovecot, provider: OAuthProvider
) -> None:
    """Consent withdrawn: the watcher's next login is refused, the refresh is refused
    (invalid_grant), the inbox is FAILED with REAUTH_REQUIRED. startOAuthConnection with its
    id connects the same inbox again: its messages kept, mail that came meanwhile received
    once, watching resumed."""
    tenant = await world.tenant_with_app()
    servers = {
        "smtp": {"host": "127.0.0.1", "port": dovecot.submission_port, "security": "STARTTLS"},
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port, "security": "TLS"},
    }
    inbox_id = await world.connect(tenant, email=REVOKED, **servers)
    await watched(tenant, inbox_id, dovecot)
    dovecot.deliver(REVOKED, mail("before-revoke", REVOKED))
    await stored(tenant, inbox_id, "before-revoke")

    provider.revoke_user(REVOKED)
    renamed = await tenant.client(RENAME, {"id": inbox_id, "name": "Petra"})  # log in again
    assert renamed.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"

    async def reauth() -> dict[str, Any] | None:
        inbox = await state_of(tenant, inbox_id)
        return inbox if inbox["status"] == "FAILED" else None

    failed = await wait_until(reauth, "the inbox needs its account again", timeout=60)
    assert failed["statusReason"].startswith("REAUTH_REQUIRED"), failed
    dovecot.deliver(REVOKED, mail("while-away", REVOKED))

    assert await world.connect(tenant, inboxId=inbox_id, email=REVOKED, **servers) == inbox_id
    await watched(tenant, inbox_id, dovecot)
    await stored(tenant, inbox_id, "while-away")
    dovecot.deliver(REVOKED, mail("after-reconnect", REVOKED))
    await stored(tenant, inbox_id, "after-reconnect")
    assert sorted(await subjects(tenant, inbox_id)) == [
        "after-reconnect",
        "before-revoke",
        "while-away",
    ]


@pytest.fixture(scope="module")
async def unlingering(
    dovecot: Dovecot,
    provider: OAuthProvider,
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
) -> AsyncIterator[OAuthWorld]:
    """As ``world``, but the IDLE checker's connection closes after every check: each IDLE
    entered opens (and logs in) a new one."""
    settings = {**STACK, "receiving_idle_check_linger_seconds": 0.0}
    async with oauth_world_on(provider, pg_server[0], certs, keyring, **settings) as world:
        yield world


async def test_the_idle_checker_logs_in_with_a_token_fresh_then(
    unlingering: OAuthWorld, dovecot: Dovecot, provider: OAuthProvider
) -> None:
    """A watch session outlives its access token (Dovecot checks a token only at login). The
    IDLE checker's connections, opened each time IDLE is entered, log in with the token stored
    then: the session's old one once (refused: refreshed once, no error counted, the session
    not restarted), and after the refresh never again."""
    world = unlingering
    tenant = await world.tenant_with_app()
    servers = {
        "smtp": {"host": "127.0.0.1", "port": dovecot.submission_port, "security": "STARTTLS"},
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port, "security": "TLS"},
    }
    inbox_id = await world.connect(tenant, email=LONG, **servers)
    await watched(tenant, inbox_id, dovecot)
    old = (await world.logins.access_token(await world.row(tenant, inbox_id))).reveal()
    provider.expire_access_token(old)  # the session's token, ended early
    before = provider.token_requests["refresh_token"]
    old_at_expiry = provider.introspected[old]
    dovecot.deliver(LONG, mail("second-long", LONG))
    await stored(tenant, inbox_id, "second-long")

    # The checker logs in when IDLE is entered again and no EXISTS came with it, which may be
    # after the message is stored: wait for that login's refresh rather than assume it.
    # The provider counts the refresh as it answers; inboxd stores the new token a moment
    # later: wait for the stored one to change.
    async def refreshed() -> str | None:
        if provider.token_requests["refresh_token"] <= before:
            return None
        token = (await world.logins.access_token(await world.row(tenant, inbox_id))).reveal()
        return token if token != old else None

    new: str = await wait_until(
        refreshed, "the checker's refused login refreshed and stored the token", timeout=60
    )

    async def retried() -> bool:  # the refused login's retry, with the new token
        return provider.introspected[new] > 0

    await wait_until(retried, "the checker logged in with the new token", timeout=60)
    old_asked, new_asked = provider.introspected[old], provider.introspected[new]

    dovecot.deliver(LONG, mail("third-long", LONG))
    await stored(tenant, inbox_id, "third-long")

    async def checked_again() -> bool:  # a checker's login after the refresh
        return provider.introspected[new] > new_asked

    await wait_until(checked_again, "a checker logged in after the refresh", timeout=60)
    inbox = await watched(tenant, inbox_id, dovecot)
    # A checker logging in with the session's own token would be refused again and again; a
    # session restarted would count an error.
    assert provider.introspected[old] == old_asked, "the refreshed-away token was used again"
    # Once after it ran out: the checker's login, refused, then retried with a new token. A
    # checker on the session's first endpoint would have been refused, the session restarted
    # and its login refused too (3).
    assert old_asked == old_at_expiry + 1, (old_at_expiry, old_asked)
    assert inbox["errorCount"] == 0 and inbox["receiving"]["lastError"] is None, inbox
    assert provider.token_requests["refresh_token"] == before + 1
