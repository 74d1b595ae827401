"""An OAuth inbox verified like any other, end to end: configureOAuthApp, startOAuthConnection,
the provider's consent, the callback, then the worker logging in with XOAUTH2 to SMTP and
IMAP servers that check each token at the loopback provider. A token the server refuses is
refreshed once and the login tried once more; a revoked grant fails the inbox with
REAUTH_REQUIRED until it is connected again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.jobs import JOBS_CHANNEL
from storage.secrets import KeyRing
from tests.conftest import Tenant, verifier_on
from tests.inboxd.oauth_support import START, OAuthWorld
from tests.sending.fragments import GET as GET_OUTGOING
from tests.sending.fragments import SEND
from tests.support.mailservers import MailCerts, SmtpMode
from tests.support.oauth_mail import OAuthImapServer, OAuthSmtpServer
from tests.support.oauth_provider import OAuthProvider
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

EVENTS = "subscription { emailInboxEvents { kind inboxId version status } }"
TESTS = (
    "query($id: ID!) { emailInbox(id: $id) { status statusReason oauth { reauthRequiredAt } "
    "connectionTests(first: 1) { edges { node { id state attempts "
    "smtp { ok code hint field } imap { ok code hint field } } } } } }"
)
TEST_CONNECTION = (
    "mutation($id: ID!) { testConnection(id: $id) { __typename "
    "... on TestConnectionSuccess { connectionTest { id } } } }"
)


class MailWorld(OAuthWorld):
    smtp: OAuthSmtpServer
    imap: OAuthImapServer

    def servers(self) -> dict[str, Any]:
        return {
            "smtp": {"host": "127.0.0.1", "port": self.smtp.port, "security": "STARTTLS"},
            "imap": {"host": "127.0.0.1", "port": self.imap.port, "security": "TLS"},
        }

    async def connect_and_watch(self, tenant: Tenant, **variables: Any) -> tuple[str, list[str]]:
        """Connect an account and follow the workspace's events to the inbox's final status."""
        ws = await WSClient.connect(self.verifier.stack.base_url, tenant.key)
        try:
            events = await ws.subscribe(EVENTS, {})
            assert self.verifier.stack.state.hub is not None
            await subscribed(self.verifier.stack.state.hub, tenant.workspace.id)
            inbox_id = await self.connect(tenant, **variables, **self.servers())
            seen: list[str] = []
            while not seen or seen[-1] not in ("ACTIVE", "FAILED"):
                message = await ws.next_payload(events, timeout=30)
                event = message["payload"]["data"]["emailInboxEvents"]
                if event["inboxId"] == inbox_id and event["status"]:
                    seen.append(event["status"])
        finally:
            await ws.close()
        return inbox_id, seen

    async def retest(self, tenant: Tenant, inbox_id: str) -> dict[str, Any]:
        """testConnection, then the finished test and the inbox."""
        queued = await tenant.client(TEST_CONNECTION, {"id": inbox_id})
        assert queued.data["testConnection"]["__typename"] == "TestConnectionSuccess"
        test_id = queued.data["testConnection"]["connectionTest"]["id"]

        async def finished() -> dict[str, Any] | None:
            inbox = (await tenant.client(TESTS, {"id": inbox_id})).data["emailInbox"]
            node = inbox["connectionTests"]["edges"][0]["node"]
            done = node["id"] == test_id and node["state"] in ("PASSED", "FAILED")
            return inbox if done and inbox["status"] in ("ACTIVE", "FAILED") else None

        return await wait_until(finished, "the test finished", timeout=30)


@pytest.fixture(scope="module")
async def mail_world(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[MailWorld]:
    with (
        OAuthProvider() as provider,
        OAuthSmtpServer(SmtpMode.STARTTLS, provider, ssl_context=certs.server_context) as smtp,
        OAuthImapServer(provider, ssl_context=certs.server_context) as imap,
    ):
        provider.add_user("owner@example.com")
        async with verifier_on(
            pg_server[0],
            certs,
            keyring,
            worker=True,
            oauth_google_authorize_url=provider.authorize_url,
            oauth_google_token_url=provider.token_url,
            oauth_google_userinfo_url=provider.userinfo_url,
        ) as verifier:
            client = provider.register_client([f"{verifier.stack.base_url}/oauth/callback"])
            world = MailWorld(verifier, provider, client)
            world.smtp, world.imap = smtp, imap
            yield world


async def test_connected_account_goes_pending_verifying_active(mail_world: MailWorld):
    tenant = await mail_world.tenant_with_app()
    inbox_id, seen = await mail_world.connect_and_watch(tenant)
    assert seen == ["PENDING", "VERIFYING", "ACTIVE"]
    inbox = (await tenant.client(TESTS, {"id": inbox_id})).data["emailInbox"]
    test = inbox["connectionTests"]["edges"][0]["node"]
    assert test["state"] == "PASSED" and test["smtp"]["ok"] and test["imap"]["ok"]
    assert "XOAUTH2" in mail_world.smtp.oauth_attempts


async def test_a_refused_token_is_refreshed_once_and_the_login_retried(mail_world: MailWorld):
    provider = mail_world.provider
    provider.add_user("rejected@example.com")
    tenant = await mail_world.tenant_with_app()
    inbox_id, seen = await mail_world.connect_and_watch(tenant, email="rejected@example.com")
    assert seen[-1] == "ACTIVE"
    # The provider ends the token early: inboxd still thinks it fresh, the servers refuse it.
    row = await mail_world.row(tenant, inbox_id)
    token = await mail_world.logins.access_token(row)
    provider.expire_access_token(token.reveal())
    before = provider.token_requests["refresh_token"]
    inbox = await mail_world.retest(tenant, inbox_id)
    test = inbox["connectionTests"]["edges"][0]["node"]
    assert test["state"] == "PASSED" and test["attempts"] == 1
    assert provider.token_requests["refresh_token"] == before + 1  # one refresh, not a loop


async def test_a_revoked_grant_fails_with_reauth_required_then_reconnects(mail_world: MailWorld):
    provider = mail_world.provider
    provider.add_user("gone@example.com")
    tenant = await mail_world.tenant_with_app()
    inbox_id, seen = await mail_world.connect_and_watch(tenant, email="gone@example.com")
    assert seen[-1] == "ACTIVE"
    provider.revoke_user("gone@example.com")  # its access token stops working too
    inbox = await mail_world.retest(tenant, inbox_id)
    test = inbox["connectionTests"]["edges"][0]["node"]
    assert inbox["status"] == "FAILED" and test["state"] == "FAILED"
    assert (
        test["smtp"]["code"] == "REAUTH_REQUIRED" and "startOAuthConnection" in test["smtp"]["hint"]
    )
    assert inbox["oauth"]["reauthRequiredAt"] is not None
    # A new consent restores the same inbox.
    started = await tenant.client(START, {"provider": "GOOGLE", "inboxId": inbox_id})
    assert started.data["startOAuthConnection"]["__typename"] == "StartOAuthConnectionSuccess"
    again, seen = await mail_world.connect_and_watch(tenant, inboxId=inbox_id)
    assert again == inbox_id and seen[-1] == "ACTIVE"


async def test_sending_refreshes_a_refused_token_once_and_sends(mail_world: MailWorld):
    provider = mail_world.provider
    provider.add_user("sender@example.com")
    tenant = await mail_world.tenant_with_app()
    inbox_id, seen = await mail_world.connect_and_watch(tenant, email="sender@example.com")
    assert seen[-1] == "ACTIVE"
    token = await mail_world.logins.access_token(await mail_world.row(tenant, inbox_id))
    provider.expire_access_token(token.reveal())
    before = provider.token_requests["refresh_token"]
    delivered = len(mail_world.smtp.messages)
    sent = await tenant.client(
        SEND,
        {"inboxId": inbox_id, "input": {"to": ["rita@example.com"], "subject": "Hi", "text": "x"}},
    )
    outgoing_id = sent.data["sendEmail"]["outgoingMessage"]["id"]

    async def final() -> dict[str, Any] | None:
        message = (await tenant.client(GET_OUTGOING, {"id": outgoing_id})).data["outgoingMessage"]
        return message if message["state"] in ("SENT", "FAILED") else None

    message = await wait_until(final, "the message was sent", timeout=30)
    assert message["state"] == "SENT", message
    assert provider.token_requests["refresh_token"] == before + 1
    assert len(mail_world.smtp.wait_for_messages(delivered + 1)) == delivered + 1


CREATE_EXTERNAL = """
mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  __typename ... on CreateEmailInboxSuccess { inbox { id } } } }"""


async def test_an_external_token_that_runs_out_fails_the_inbox_then_and_there(
    mail_world: MailWorld,
):
    """No login needed to notice: the worker sleeps until the earliest external token runs
    out and fails its inbox with REAUTH_REQUIRED and the hint to give a new one."""
    tenant = await mail_world.verifier.tenant()
    provider = mail_world.provider
    provider.add_user("external@example.com")
    token = provider.issue_tokens("external@example.com").access_token
    later = datetime.now(UTC) + timedelta(hours=1)
    ws = await WSClient.connect(mail_world.verifier.stack.base_url, tenant.key)
    try:
        events = await ws.subscribe(EVENTS, {})
        assert mail_world.verifier.stack.state.hub is not None
        await subscribed(mail_world.verifier.stack.state.hub, tenant.workspace.id)
        created = await tenant.client(CREATE_EXTERNAL, {"input": {
            "email": "external@example.com", **mail_world.servers(),
            "oauth2": {"accessToken": token, "expiresAt": later.isoformat()}}})  # fmt: skip
        inbox_id = created.data["createEmailInbox"]["inbox"]["id"]

        async def next_status() -> str:
            while True:
                message = await ws.next_payload(events, timeout=30)
                event = message["payload"]["data"]["emailInboxEvents"]
                if event["inboxId"] == inbox_id and event["status"]:
                    return str(event["status"])

        seen = [await next_status() for _ in range(3)]
        assert seen == ["PENDING", "VERIFYING", "ACTIVE"]
        logins = len(mail_world.smtp.oauth_attempts) + len(mail_world.imap.oauth_attempts)
        # The token is now about to run out (as if given with a short expiresAt).
        async with mail_world.verifier.db.connection() as connection:
            await connection.execute(
                "UPDATE email_inbox SET oauth_access_token_expires_at = now() + interval '1 s'"
                " WHERE id = $1",
                uuid.UUID(inbox_id),
            )
            await connection.execute(f"NOTIFY {JOBS_CHANNEL}")  # the workers plan again
        assert await next_status() == "FAILED"
    finally:
        await ws.close()
    inbox = (await tenant.client(TESTS, {"id": inbox_id})).data["emailInbox"]
    assert inbox["statusReason"].startswith("REAUTH_REQUIRED: The access token given with oauth2")
    assert "updateEmailInbox with oauth2" in inbox["statusReason"]
    assert inbox["oauth"]["reauthRequiredAt"] is not None
    assert len(mail_world.smtp.oauth_attempts) + len(mail_world.imap.oauth_attempts) == logins
