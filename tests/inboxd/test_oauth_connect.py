"""Connecting an account with OAuth, end to end against the loopback provider: the app's
configuration, startOAuthConnection's URL (state, PKCE S256), the provider's consent, and
inboxd's callback creating (or reconnecting) the inbox. ``state`` is single use, expires and
belongs to the workspace that started it."""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from inboxd.configs import oauth_config
from inboxd.settings import Settings
from resolvers.oauth_client import OAuthConfig
from schema.oauth import ConfigureOAuthAppInput
from storage import oauth_apps
from storage.secrets import DecryptionError, associated_data
from tests.inboxd.oauth_support import APPS, CONFIGURE, GET, START, OAuthWorld, oauth_world
from tests.support.oauth_provider import pkce_challenge

__all__ = ["oauth_world"]  # the module's fixture


CREATE_PASSWORD_INBOX = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) { __typename ... on CreateEmailInboxSuccess { inbox { id } } }
}"""


def fields_of(payload: dict[str, object]) -> set[str]:
    return {f["field"] for f in payload["fields"]}  # type: ignore[attr-defined,index]


async def test_configure_app_refuses_bad_input_naming_each_field(oauth_world: OAuthWorld):
    tenant = await oauth_world.verifier.tenant()
    refused = await tenant.client(
        CONFIGURE,
        {
            "input": {
                "provider": "GOOGLE",
                "clientId": " ",
                "tenant": "contoso.onmicrosoft.com",
                "redirectUri": "http://inboxd.example.com/oauth/callback",
            }
        },
    )
    payload = refused.data["configureOAuthApp"]
    assert payload["__typename"] == "ValidationError"
    assert fields_of(payload) == {"clientId", "clientSecret", "tenant", "redirectUri"}


async def test_the_client_secret_is_write_only_and_kept_when_omitted(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app("MICROSOFT")
    changed = await tenant.client(
        CONFIGURE,
        {
            "input": {
                "provider": "MICROSOFT",
                "clientId": oauth_world.client.client_id,
                "tenant": "contoso.onmicrosoft.com",
                "redirectUri": oauth_world.redirect_uri,
            }
        },
    )
    app = changed.data["configureOAuthApp"]["app"]
    assert app["hasClientSecret"] is True and app["tenant"] == "contoso.onmicrosoft.com"
    url = await oauth_world.start(tenant, "MICROSOFT")
    assert url.startswith(f"{oauth_world.provider.base_url}/contoso.onmicrosoft.com/oauth2/")
    listed = (await tenant.client(APPS)).data["oauthApps"]
    assert [a["provider"] for a in listed] == ["MICROSOFT"]
    assert oauth_world.client.client_secret not in str(changed.body) + str(listed)
    # Other workspaces see none of it.
    other = await oauth_world.verifier.tenant()
    assert (await other.client(APPS)).data["oauthApps"] == []


async def test_start_needs_the_workspaces_app(oauth_world: OAuthWorld):
    tenant = await oauth_world.verifier.tenant()
    payload = (await tenant.client(START, {"provider": "GOOGLE"})).data["startOAuthConnection"]
    assert payload["__typename"] == "ValidationError"
    assert fields_of(payload) == {"provider"}


async def test_authorization_url_carries_state_and_an_s256_challenge(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    url = await oauth_world.start(tenant, email="owner@example.com")
    assert url.startswith(oauth_world.provider.authorize_url + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43 and len(query["state"]) >= 43
    assert query["client_id"] == oauth_world.client.client_id
    assert query["redirect_uri"] == oauth_world.redirect_uri
    assert "https://mail.google.com/" in query["scope"].split()
    assert query["login_hint"] == "owner@example.com"
    assert query["access_type"] == "offline"
    # Only a hash of state is stored, and the verifier only encrypted.
    async with oauth_world.verifier.db.connection() as connection:
        stored = await connection.fetchrow(
            "SELECT id, state_hash, code_verifier FROM oauth_state WHERE workspace_id = $1",
            tenant.workspace.id,
        )
    assert query["state"].encode() not in stored["state_hash"]
    verifier = oauth_world.verifier.stack.state.keyring.decrypt(
        stored["code_verifier"], associated_data("oauth_state", "code_verifier", stored["id"])
    )
    assert pkce_challenge(verifier.reveal()) == query["code_challenge"]
    assert verifier.reveal().encode() not in stored["code_verifier"]


async def test_callback_creates_an_oauth_inbox_with_the_provider_preset(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    location = await oauth_world.provider.consent(await oauth_world.start(tenant))
    page = await oauth_world.callback(location)
    assert page.status_code == 200 and "owner@example.com is connected" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    code = parse_qs(urlsplit(location).query)["code"][0]
    assert code not in page.text
    [row] = await oauth_world.inbox_rows(tenant)
    inbox = (await tenant.client(GET, {"id": str(row.id)})).data["emailInbox"]
    assert inbox["authMethod"] == "OAUTH2" and inbox["status"] == "PENDING"
    assert inbox["provider"] == "GMAIL"
    assert inbox["oauth"]["provider"] == "GOOGLE" and inbox["oauth"]["managed"] is True
    assert inbox["oauth"]["accessTokenExpiresAt"] is not None
    assert inbox["smtp"]["host"] == "smtp.gmail.com" and inbox["imap"]["host"] == "imap.gmail.com"
    assert inbox["smtp"]["username"] == "owner@example.com"
    assert inbox["smtp"]["hasPassword"] is False
    # Its first verification is queued, as for any new inbox.
    async with oauth_world.verifier.db.connection() as connection:
        reasons = await connection.fetch(
            "SELECT reason FROM connection_test WHERE inbox_id = $1", row.id
        )
    assert [r["reason"] for r in reasons] == ["CREATED"]


async def test_callback_uses_the_servers_given_at_start(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app("MICROSOFT")
    oauth_world.provider.tenants.clear()
    inbox_id = await oauth_world.connect(
        tenant,
        "MICROSOFT",
        smtp={"host": "smtp.office365.us", "port": 587},
        imap={"host": "outlook.office365.us"},
    )
    inbox = (await tenant.client(GET, {"id": inbox_id})).data["emailInbox"]
    assert inbox["provider"] == "OFFICE365" and inbox["oauth"]["provider"] == "MICROSOFT"
    assert (inbox["smtp"]["host"], inbox["smtp"]["security"]) == ("smtp.office365.us", "STARTTLS")
    assert inbox["imap"]["host"] == "outlook.office365.us"
    # The app's tenant (default common) in Microsoft's authorize and token URLs.
    assert oauth_world.provider.tenants and set(oauth_world.provider.tenants) == {"common"}


async def test_state_is_single_use(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    location = await oauth_world.provider.consent(await oauth_world.start(tenant))
    assert (await oauth_world.callback(location)).status_code == 200
    again = await oauth_world.callback(location)
    assert again.status_code == 400 and again.headers["x-inboxd-error"] == "STATE_USED"
    forged = location.replace("state=", "state=x")
    unknown = await oauth_world.callback(forged)
    assert unknown.headers["x-inboxd-error"] == "STATE_UNKNOWN"


async def test_an_expired_state_is_refused(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    location = await oauth_world.provider.consent(await oauth_world.start(tenant))
    async with oauth_world.verifier.db.connection() as connection:
        await connection.execute(
            "UPDATE oauth_state SET expires_at = now() - interval '1 second' "
            "WHERE workspace_id = $1",
            tenant.workspace.id,
        )
    page = await oauth_world.callback(location)
    assert page.status_code == 400 and page.headers["x-inboxd-error"] == "STATE_EXPIRED"
    assert await oauth_world.inbox_rows(tenant) == []


async def test_state_belongs_to_the_workspace_that_started_it(oauth_world: OAuthWorld):
    one = await oauth_world.tenant_with_app()
    two = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(one)
    # Another workspace cannot aim a connection at this inbox...
    refused = await two.client(START, {"provider": "GOOGLE", "inboxId": inbox_id})
    assert refused.data["startOAuthConnection"]["__typename"] == "NotFound"
    # ... and what it starts lands in its own workspace only.
    assert await oauth_world.connect(two) != inbox_id
    assert [str(r.id) for r in await oauth_world.inbox_rows(one)] == [inbox_id]


async def test_signing_in_as_another_account_is_refused(oauth_world: OAuthWorld):
    oauth_world.provider.add_user("someone-else@example.com")
    tenant = await oauth_world.tenant_with_app()
    url = await oauth_world.start(tenant, email="expected@example.com")
    page = await oauth_world.callback(await oauth_world.provider.consent(url))
    assert page.status_code == 400 and page.headers["x-inboxd-error"] == "WRONG_ACCOUNT"
    assert await oauth_world.inbox_rows(tenant) == []


async def test_refused_consent_creates_nothing(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    oauth_world.provider.refuse_consent = True
    try:
        location = await oauth_world.provider.consent(await oauth_world.start(tenant))
    finally:
        oauth_world.provider.refuse_consent = False
    page = await oauth_world.callback(location)
    assert page.status_code == 400 and page.headers["x-inboxd-error"] == "ACCESS_DENIED"
    assert await oauth_world.inbox_rows(tenant) == []


async def test_reconnecting_keeps_the_inbox(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    before = await oauth_world.row(tenant, inbox_id)
    again = await oauth_world.connect(tenant, inboxId=inbox_id)
    assert again == inbox_id
    after = await oauth_world.row(tenant, inbox_id)
    assert after.created_at == before.created_at
    assert after.oauth_refresh_token != before.oauth_refresh_token  # the new grant's
    assert uuid.UUID(inbox_id) == after.id


async def test_an_apps_secret_is_bound_to_its_row(oauth_world: OAuthWorld):
    one, two = await oauth_world.tenant_with_app(), await oauth_world.tenant_with_app()
    async with oauth_world.verifier.db.connection() as connection:
        await connection.execute(
            "UPDATE oauth_app SET client_secret = (SELECT client_secret FROM oauth_app "
            "WHERE workspace_id = $1) WHERE workspace_id = $2",
            one.workspace.id,
            two.workspace.id,
        )
        [moved] = await oauth_apps.list_apps(connection, two.workspace.id)
    keyring = oauth_world.verifier.stack.state.keyring
    with pytest.raises(DecryptionError):
        oauth_apps.client_secret(keyring, moved)
    # Its workspace cannot start a connection with a secret it cannot read, and says why.
    refused = await two.client(START, {"provider": "GOOGLE"})
    payload = refused.data["startOAuthConnection"]
    assert payload["__typename"] == "ValidationError" and fields_of(payload) == {"provider"}
    assert "clientSecret" in payload["fields"][0]["message"]


def test_provider_endpoints_are_fixed_unless_the_server_moves_them():
    fixed = OAuthConfig()
    assert fixed.google.token_url == "https://oauth2.googleapis.com/token"
    assert fixed.microsoft.authorize_url.startswith("https://login.microsoftonline.com/{tenant}/")
    moved = oauth_config(Settings(oauth_google_token_url="https://oauth.example.test/token"))
    assert moved.google.token_url == "https://oauth.example.test/token"
    assert moved.google.authorize_url == fixed.google.authorize_url
    assert moved.microsoft == fixed.microsoft
    # Nothing a workspace configures names an endpoint.
    assert {f.name for f in dataclasses.fields(ConfigureOAuthAppInput)} == {
        "provider", "client_id", "client_secret", "tenant", "redirect_uri"
    }  # fmt: skip


async def test_an_inbox_reconnects_only_with_its_own_provider(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app("GOOGLE")
    configured = await tenant.client(
        CONFIGURE,
        {
            "input": {
                "provider": "MICROSOFT",
                "clientId": oauth_world.client.client_id,
                "clientSecret": oauth_world.client.client_secret,
                "redirectUri": oauth_world.redirect_uri,
            }
        },
    )
    assert configured.data["configureOAuthApp"]["__typename"] == "ConfigureOAuthAppSuccess"
    inbox_id = await oauth_world.connect(tenant)
    refused = await tenant.client(START, {"provider": "MICROSOFT", "inboxId": inbox_id})
    payload = refused.data["startOAuthConnection"]
    assert payload["__typename"] == "ValidationError" and fields_of(payload) == {"provider"}
    assert "GOOGLE" in payload["fields"][0]["message"]


async def test_a_password_inbox_switched_to_oauth_gets_the_providers_servers(
    oauth_world: OAuthWorld,
):
    oauth_world.provider.add_user("switch@example.com")
    tenant = await oauth_world.tenant_with_app()
    created = await tenant.client(
        CREATE_PASSWORD_INBOX,
        {
            "input": {
                "email": "switch@example.com",
                "smtp": {"host": "mail.example.com", "port": 587, "password": "pw-1"},
                "imap": {"host": "mail.example.com", "password": "pw-1"},
            }
        },
    )
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    assert await oauth_world.connect(tenant, inboxId=inbox_id) == inbox_id
    inbox = (await tenant.client(GET, {"id": inbox_id})).data["emailInbox"]
    assert inbox["authMethod"] == "OAUTH2" and inbox["provider"] == "GMAIL"
    # The token goes to Google's servers, not to the hosts the password inbox named.
    assert inbox["smtp"]["host"] == "smtp.gmail.com" and inbox["imap"]["host"] == "imap.gmail.com"
    assert inbox["status"] == "PENDING"
