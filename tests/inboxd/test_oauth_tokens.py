"""An OAuth inbox's tokens (resolvers.logins) against the loopback provider: refreshed before
they expire, once after a server refused one, by one process at a time; a refused refresh
token or an expired external token makes the inbox FAILED (REAUTH_REQUIRED) until the account
is connected again, which keeps the inbox. No token, code, secret or verifier leaks."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from inboxd.logs import configure_logging, redact_text
from resolvers.logins import EXTERNAL_HINT, REAUTH_HINT, ReauthRequired, TokenUnavailable
from storage import oauth_apps
from storage.events import CHANNEL
from storage.inbox_passwords import decrypt_password, rotate_secrets
from storage.secrets import DecryptionError, KeyRing, associated_data, key_id_of
from tests.inboxd.oauth_support import GET, START, OAuthWorld, oauth_world

__all__ = ["oauth_world"]  # the module's fixture


async def expire_soon(world: OAuthWorld, inbox_id: str, seconds: float = 60) -> None:
    async with world.verifier.db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET oauth_access_token_expires_at = now() + $2 WHERE id = $1",
            uuid.UUID(inbox_id),
            timedelta(seconds=seconds),
        )


def refreshes(world: OAuthWorld) -> int:
    return world.provider.token_requests["refresh_token"]


async def test_a_fresh_token_is_used_as_it_is(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    row = await oauth_world.row(tenant, await oauth_world.connect(tenant))
    before = refreshes(oauth_world)
    token = await oauth_world.logins.access_token(row)
    assert oauth_world.provider.valid_user(token.reveal()) == "owner@example.com"
    assert refreshes(oauth_world) == before


async def test_a_token_expiring_within_the_margin_is_refreshed_first(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    await expire_soon(oauth_world, inbox_id)  # within the 5 minute margin
    row = await oauth_world.row(tenant, inbox_id)
    old = decrypt_password(oauth_world.verifier.stack.state.keyring, row, "oauth_access_token")
    before = refreshes(oauth_world)
    token = await oauth_world.logins.access_token(row)
    assert token != old and refreshes(oauth_world) == before + 1
    stored = await oauth_world.row(tenant, inbox_id)
    assert (
        decrypt_password(oauth_world.verifier.stack.state.keyring, stored, "oauth_access_token")
        == token
    )
    assert stored.oauth_access_token_expires_at > datetime.now(UTC) + timedelta(minutes=30)
    # Not a change of the inbox: no version, so the receiver's session is not restarted.
    assert stored.version == row.version


async def test_two_refreshes_at_once_ask_the_provider_once(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    await expire_soon(oauth_world, inbox_id)
    row = await oauth_world.row(tenant, inbox_id)
    before = refreshes(oauth_world)
    one, two = await asyncio.gather(
        oauth_world.logins.access_token(row), oauth_world.logins.access_token(row)
    )
    assert one == two and refreshes(oauth_world) == before + 1


async def test_a_rejected_token_is_refreshed_once(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    row = await oauth_world.row(tenant, await oauth_world.connect(tenant))
    used = await oauth_world.logins.access_token(row)
    before = refreshes(oauth_world)
    fresh = await oauth_world.logins.access_token(row, rejected=used)
    assert fresh != used and refreshes(oauth_world) == before + 1
    # The caller that comes late with the same refused token gets the new one, no refresh.
    assert await oauth_world.logins.access_token(row, rejected=used) == fresh
    assert refreshes(oauth_world) == before + 1


async def test_a_rotated_refresh_token_is_kept(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    await expire_soon(oauth_world, inbox_id)
    row = await oauth_world.row(tenant, inbox_id)
    oauth_world.provider.rotate_refresh_tokens = True
    try:
        await oauth_world.logins.access_token(row)
        await expire_soon(oauth_world, inbox_id)
        # The first refresh revoked the refresh token it used: this works only with the new.
        await oauth_world.logins.access_token(await oauth_world.row(tenant, inbox_id))
    finally:
        oauth_world.provider.rotate_refresh_tokens = False


async def test_a_revoked_grant_fails_the_inbox_until_it_is_connected_again(
    oauth_world: OAuthWorld,
):
    provider = oauth_world.provider
    provider.add_user("revoked@example.com")
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant, email="revoked@example.com")
    async with oauth_world.verifier.db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET status = 'ACTIVE' WHERE id = $1", uuid.UUID(inbox_id)
        )
    provider.revoke_user("revoked@example.com")
    await expire_soon(oauth_world, inbox_id)
    with pytest.raises(ReauthRequired) as refused:
        await oauth_world.logins.access_token(await oauth_world.row(tenant, inbox_id))
    assert refused.value.hint == REAUTH_HINT
    inbox = (await tenant.client(GET, {"id": inbox_id})).data["emailInbox"]
    assert inbox["status"] == "FAILED" and inbox["statusReason"].startswith("REAUTH_REQUIRED")
    assert inbox["oauth"]["reauthRequiredAt"] is not None
    # Connecting again restores the same inbox, queued for verification.
    assert await oauth_world.connect(tenant, inboxId=inbox_id) == inbox_id
    inbox = (await tenant.client(GET, {"id": inbox_id})).data["emailInbox"]
    assert inbox["status"] == "PENDING" and inbox["oauth"]["reauthRequiredAt"] is None
    token = await oauth_world.logins.access_token(await oauth_world.row(tenant, inbox_id))
    assert provider.valid_user(token.reveal()) == "revoked@example.com"


def external_input(email: str, expires_at: datetime, **extra: object) -> dict[str, object]:
    return {
        "email": email,
        "smtp": {"host": "smtp.example.com", "port": 587},
        "oauth2": {"accessToken": "ext-token-5521", "expiresAt": expires_at.isoformat()},
        **extra,
    }


FIELDS = (
    "id authMethod status statusReason smtp { hasPassword } "
    "oauth { managed accessTokenExpiresAt reauthRequiredAt }"
)
ERRORS = "... on ValidationError { fields { field message } }"
CREATE = """
mutation Create($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) {
    __typename ... on CreateEmailInboxSuccess { inbox { %s } } %s
  }
}""" % (FIELDS, ERRORS)
UPDATE = """
mutation Update($id: ID!, $input: UpdateEmailInboxInput!) {
  updateEmailInbox(id: $id, input: $input) {
    __typename ... on UpdateEmailInboxSuccess { inbox { %s } } %s
  }
}""" % (FIELDS, ERRORS)


async def test_an_external_token_is_used_until_it_expires(oauth_world: OAuthWorld):
    tenant = await oauth_world.verifier.tenant()
    later = datetime.now(UTC) + timedelta(hours=1)
    created = await tenant.client(CREATE, {"input": external_input("ext@example.com", later)})
    inbox = created.data["createEmailInbox"]["inbox"]
    assert inbox["authMethod"] == "OAUTH2" and inbox["oauth"]["managed"] is False
    assert inbox["smtp"]["hasPassword"] is False
    row = await oauth_world.row(tenant, inbox["id"])
    assert (await oauth_world.logins.access_token(row)).reveal() == "ext-token-5521"
    await expire_soon(oauth_world, inbox["id"], seconds=-1)
    with pytest.raises(ReauthRequired) as refused:
        await oauth_world.logins.access_token(await oauth_world.row(tenant, inbox["id"]))
    assert refused.value.hint == EXTERNAL_HINT
    failed = (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert failed["status"] == "FAILED" and failed["oauth"]["reauthRequiredAt"] is not None
    updated = await tenant.client(
        UPDATE,
        {
            "id": inbox["id"],
            "input": {"oauth2": {"accessToken": "ext-token-5522", "expiresAt": later.isoformat()}},
        },
    )
    again = updated.data["updateEmailInbox"]["inbox"]
    assert again["status"] == "PENDING" and again["oauth"]["reauthRequiredAt"] is None
    row = await oauth_world.row(tenant, inbox["id"])
    assert (await oauth_world.logins.access_token(row)).reveal() == "ext-token-5522"


async def test_external_token_input_is_checked(oauth_world: OAuthWorld):
    tenant = await oauth_world.verifier.tenant()
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = await tenant.client(CREATE, {"input": external_input("old@example.com", past)})
    assert [f["field"] for f in expired.data["createEmailInbox"]["fields"]] == ["oauth2.expiresAt"]
    later = datetime.now(UTC) + timedelta(hours=1)
    both = external_input("both@example.com", later, password="a-password")
    refused = await tenant.client(CREATE, {"input": both})
    assert [f["field"] for f in refused.data["createEmailInbox"]["fields"]] == ["oauth2"]


async def test_a_stored_token_is_never_sent_to_a_new_host(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    moved = await tenant.client(
        UPDATE, {"id": inbox_id, "input": {"smtp": {"host": "evil.example.com"}}}
    )
    assert [f["field"] for f in moved.data["updateEmailInbox"]["fields"]] == ["smtp.host"]


async def test_no_token_code_secret_or_verifier_leaks(oauth_world: OAuthWorld, capfd):
    provider = oauth_world.provider
    provider.add_user("leak@example.com")
    events: list[str] = []
    listener = await asyncpg.connect(oauth_world.verifier.stack.settings.database_url)
    await listener.add_listener(CHANNEL, lambda *args: events.append(str(args[-1])))
    bodies: list[str] = []
    configure_logging("INFO")
    try:
        tenant = await oauth_world.tenant_with_app()
        started = await tenant.client(START, {"provider": "GOOGLE", "email": "leak@example.com"})
        bodies.append(str(started.body))
        url = started.data["startOAuthConnection"]["authorizationUrl"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        location = await provider.consent(url)
        bodies.append((await oauth_world.callback(location)).text)
        bodies.append((await oauth_world.callback(location)).text)  # state used: refused
        [row] = await oauth_world.inbox_rows(tenant)
        await expire_soon(oauth_world, str(row.id))
        await oauth_world.logins.access_token(await oauth_world.row(tenant, str(row.id)))
        provider.revoke_user("leak@example.com")
        await expire_soon(oauth_world, str(row.id))
        with pytest.raises(ReauthRequired):
            await oauth_world.logins.access_token(await oauth_world.row(tenant, str(row.id)))
        bodies.append(str((await tenant.client(GET, {"id": str(row.id)})).body))
        async with oauth_world.verifier.db.connection() as connection:
            audit = await connection.fetch(
                "SELECT action, details::text FROM audit_event WHERE workspace_id = $1",
                tenant.workspace.id,
            )
            verifier_row = await connection.fetchrow(
                "SELECT id, code_verifier FROM oauth_state WHERE workspace_id = $1",
                tenant.workspace.id,
            )
    finally:
        configure_logging("WARNING")
        await listener.close()
    verifier = oauth_world.verifier.stack.state.keyring.decrypt(
        verifier_row["code_verifier"],
        associated_data("oauth_state", "code_verifier", verifier_row["id"]),
    )
    logs = capfd.readouterr().err
    assert "oauth connection completed" in logs and "oauth refresh refused" in logs
    assert {r["action"] for r in audit} >= {"OAUTH_APP_CONFIGURED", "OAUTH_CONNECTION_STARTED"}
    secrets = [*provider.secrets(), verifier.reveal()]
    assert len(secrets) > 4
    for place, text in (
        ("logs", logs),
        ("responses", "\n".join(bodies)),
        ("audit", str([tuple(r) for r in audit])),
        ("events", "\n".join(events)),
    ):
        # state is in the authorization URL startOAuthConnection answers, and nowhere else.
        kept = secrets if place == "responses" else [*secrets, state]
        leaked = [line for s in kept for line in text.splitlines() if s in line]
        assert not leaked, f"{place} hold {leaked}"


def test_oauth_values_in_a_logged_url_are_redacted():
    line = 'GET /oauth/callback?code=c0de-77&state=st4te-88 "HTTP/1.1 200" ?access_token=t0k'
    scrubbed = redact_text(line)
    assert not {"c0de-77", "st4te-88", "t0k"} & set(scrubbed.replace("&", " ").split("="))
    assert "c0de" not in scrubbed and "st4te" not in scrubbed and "t0k" not in scrubbed


async def test_a_token_is_bound_to_its_row_and_column(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    provider = oauth_world.provider
    provider.add_user("bound-a@example.com")
    provider.add_user("bound-b@example.com")
    one = await oauth_world.connect(tenant, email="bound-a@example.com")
    two = await oauth_world.connect(tenant, email="bound-b@example.com")
    async with oauth_world.verifier.db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET oauth_access_token = (SELECT oauth_access_token "
            "FROM email_inbox WHERE id = $1), oauth_refresh_token = (SELECT "
            "oauth_access_token FROM email_inbox WHERE id = $2) WHERE id = $2",
            uuid.UUID(one),
            uuid.UUID(two),
        )
    moved = await oauth_world.row(tenant, two)
    keyring = oauth_world.verifier.stack.state.keyring
    for column in ("oauth_access_token", "oauth_refresh_token"):
        with pytest.raises(DecryptionError):
            decrypt_password(keyring, moved, column)


async def test_key_rotation_reencrypts_tokens_and_app_secrets(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    old = oauth_world.verifier.stack.state.keyring
    old_spec = ",".join(f"{k}:{base64.b64encode(old._keys[k]).decode()}" for k in old.key_ids)
    new_spec = KeyRing.generate_spec("oauth-rotated")
    forward = KeyRing.parse(f"{old_spec},{new_spec}")
    db = oauth_world.verifier.db

    async def rotate(ring: KeyRing) -> None:
        after = None
        while True:
            async with db.connection() as connection:
                batch = await rotate_secrets(connection, ring, after=after)
            assert uuid.UUID(inbox_id) not in batch.unreadable  # others' tests broke theirs
            if batch.last_id is None:
                break
            after = batch.last_id
        async with db.connection() as connection:
            await oauth_apps.rotate_app_secrets(connection, ring)

    await rotate(forward)
    try:
        row = await oauth_world.row(tenant, inbox_id)
        for column in ("oauth_access_token", "oauth_refresh_token"):
            assert key_id_of(getattr(row, column)) == "oauth-rotated"
            assert decrypt_password(forward, row, column)  # readable under the new key
        async with db.connection() as connection:
            [app] = await oauth_apps.list_apps(connection, tenant.workspace.id)
        assert key_id_of(app.client_secret) == "oauth-rotated"
        assert oauth_apps.client_secret(forward, app).reveal() == oauth_world.client.client_secret
    finally:
        await rotate(KeyRing.parse(f"{new_spec},{old_spec}"))  # back: the stack's ring reads it


async def test_a_provider_outage_is_retried_later_not_a_revoked_grant(oauth_world: OAuthWorld):
    tenant = await oauth_world.tenant_with_app()
    inbox_id = await oauth_world.connect(tenant)
    await expire_soon(oauth_world, inbox_id)
    oauth_world.provider.token_endpoint_status = 503
    try:
        with pytest.raises(TokenUnavailable):
            await oauth_world.logins.access_token(await oauth_world.row(tenant, inbox_id))
    finally:
        oauth_world.provider.token_endpoint_status = None
    row = await oauth_world.row(tenant, inbox_id)
    assert row.status == "PENDING" and row.oauth_reauth_required_at is None
    assert oauth_world.provider.valid_user((await oauth_world.logins.access_token(row)).reveal())
