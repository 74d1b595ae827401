"""An inboxd whose OAuth endpoints are the loopback provider's (tests.support.oauth_provider),
and the steps of connecting an account through it, as a user's browser would take them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from resolvers.logins import Logins
from storage import inbox_reads
from storage.rows import InboxRow
from storage.secrets import KeyRing
from tests.conftest import Tenant, Verifier, verifier_on
from tests.support.dnsserver import DnsTestServer
from tests.support.mailservers import MailCerts
from tests.support.oauth_provider import OAuthClient, OAuthProvider

CONFIGURE = """
mutation Configure($input: ConfigureOAuthAppInput!) {
  configureOAuthApp(input: $input) {
    __typename
    ... on ConfigureOAuthAppSuccess {
      app { id provider clientId hasClientSecret tenant redirectUri }
    }
    ... on ValidationError { code message fields { field message } }
  }
}
"""
START = """
mutation Start($provider: OAuthProvider!, $email: String, $inboxId: ID,
               $smtp: OAuthServerInput, $imap: OAuthServerInput) {
  startOAuthConnection(provider: $provider, email: $email, inboxId: $inboxId,
                       smtp: $smtp, imap: $imap) {
    __typename
    ... on StartOAuthConnectionSuccess { authorizationUrl expiresAt }
    ... on ValidationError { code message fields { field message } }
    ... on NotFound { code message id }
  }
}
"""
INBOX_FIELDS = """
  id email provider status statusReason authMethod version
  oauth { provider managed accessTokenExpiresAt reauthRequiredAt }
  smtp { host port security username hasPassword }
  imap { host port security username hasPassword }
"""
GET = "query Get($id: ID!) { emailInbox(id: $id) { %s } }" % INBOX_FIELDS
APPS = "{ oauthApps { provider clientId hasClientSecret tenant redirectUri } }"


@dataclass
class OAuthWorld:
    verifier: Verifier
    provider: OAuthProvider
    client: OAuthClient

    @property
    def redirect_uri(self) -> str:
        return f"{self.verifier.stack.base_url}/oauth/callback"

    @property
    def logins(self) -> Logins:
        state = self.verifier.stack.state
        return Logins(state.db, state.keyring, state.oauth)

    async def tenant_with_app(self, provider: str = "GOOGLE") -> Tenant:
        tenant = await self.verifier.tenant()
        configured = await tenant.client(
            CONFIGURE,
            {
                "input": {
                    "provider": provider,
                    "clientId": self.client.client_id,
                    "clientSecret": self.client.client_secret,
                    "redirectUri": self.redirect_uri,
                }
            },
        )
        assert configured.data["configureOAuthApp"]["__typename"] == "ConfigureOAuthAppSuccess"
        return tenant

    async def start(self, tenant: Tenant, provider: str = "GOOGLE", **variables: Any) -> str:
        started = await tenant.client(START, {"provider": provider, **variables})
        payload = started.data["startOAuthConnection"]
        assert payload["__typename"] == "StartOAuthConnectionSuccess", payload
        return str(payload["authorizationUrl"])

    async def callback(self, location: str) -> httpx.Response:
        """The browser, sent back to inboxd by the provider."""
        async with httpx.AsyncClient(timeout=30) as browser:
            return await browser.get(location)

    async def connect(self, tenant: Tenant, provider: str = "GOOGLE", **variables: Any) -> str:
        """Start, consent, come back: the connected inbox's id."""
        url = await self.start(tenant, provider, **variables)
        page = await self.callback(await self.provider.consent(url))
        assert page.status_code == 200, page.text
        inboxes = await self.inbox_rows(tenant)
        if "inboxId" in variables:
            return str(next(row.id for row in inboxes if str(row.id) == variables["inboxId"]))
        email = variables.get("email") or self.provider.default_user
        return str(next(row.id for row in inboxes if row.email == email))

    async def inbox_rows(self, tenant: Tenant) -> list[InboxRow]:
        async with self.verifier.db.connection() as connection:
            page = await inbox_reads.read_page(
                connection,
                tenant.workspace.id,
                first=100,
                after=None,
                flt=inbox_reads.InboxFilter(),
            )
        return page.items

    async def row(self, tenant: Tenant, inbox_id: str) -> InboxRow:
        async with self.verifier.db.connection() as connection:
            row = await inbox_reads.read_inbox(connection, tenant.workspace.id, uuid.UUID(inbox_id))
        assert row is not None
        return row


@contextlib.asynccontextmanager
async def oauth_world_on(
    provider: OAuthProvider, database_url: str, certs: MailCerts, keyring: KeyRing, **settings: Any
) -> AsyncIterator[OAuthWorld]:
    """A stack whose Google endpoints are ``provider``'s, with a client registered for its
    callback; ``settings`` as ``verifier_on`` takes them."""
    async with verifier_on(
        database_url,
        certs,
        keyring,
        oauth_google_authorize_url=provider.authorize_url,
        oauth_google_token_url=provider.token_url,
        oauth_google_userinfo_url=provider.userinfo_url,
        **settings,
    ) as verifier:
        client = provider.register_client([f"{verifier.stack.base_url}/oauth/callback"])
        yield OAuthWorld(verifier, provider, client)


@pytest.fixture(scope="module")
async def oauth_world(
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
    dns_server: DnsTestServer,
) -> AsyncIterator[OAuthWorld]:
    with OAuthProvider() as provider:
        provider.add_user("owner@example.com")
        async with oauth_world_on(
            provider,
            pg_server[0],
            certs,
            keyring,
            worker=False,  # no verification here: the inboxes name servers never contacted
            # Microsoft's shape: the app's tenant in the path.
            oauth_microsoft_authorize_url=provider.base_url + "/{tenant}/oauth2/v2.0/authorize",
            oauth_microsoft_token_url=provider.base_url + "/{tenant}/oauth2/v2.0/token",
            oauth_microsoft_me_url=provider.graph_me_url,
        ) as world:
            yield world
