"""What the OAuth fields and the callback do: configure a workspace's app, start a connection,
and complete it (code -> tokens -> the account's address -> the inbox, verified as any other).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from resolvers import oauth_client
from resolvers.state import AppState
from resolvers.validation import (
    InputInvalid,
    NormalizedInbox,
    Problems,
    normalize_create,
    normalize_email,
    parse_id,
)
from resolvers.validation_issues import FieldIssue
from resolvers.validation_oauth import AppConfiguration, normalize_app, preset_for_account
from storage import audit, inboxes, oauth_apps
from storage.api_keys import Principal
from storage.db import Connection
from storage.models import AuthMethod, utcnow
from storage.rows import InboxRow, OAuthAppRow, OAuthStateRow
from storage.secrets import DecryptionError, Secret

log = structlog.get_logger("inboxd.oauth")


async def _audit(
    connection: Connection,
    workspace_id: uuid.UUID,
    action: str,
    *,
    inbox_id: uuid.UUID | None,
    api_key_prefix: str | None,
    client_address: str | None,
    details: dict[str, Any],
) -> None:
    await audit.record(
        connection,
        workspace_id=workspace_id,
        action=action,
        inbox_id=inbox_id,
        api_key_prefix=api_key_prefix,
        client_address=client_address,
        details=details,
    )


async def configure_app(
    state: AppState,
    principal: Principal,
    data: Mapping[str, Any],
    *,
    client_address: str | None = None,
) -> OAuthAppRow:
    async with state.db.connection() as connection, connection.transaction():
        existing = await oauth_apps.get_app(connection, principal.workspace_id, data["provider"])
        config: AppConfiguration = normalize_app(data, creating=existing is None)
        app, created = await oauth_apps.save_app(
            connection,
            state.keyring,
            workspace_id=principal.workspace_id,
            provider=config.provider,
            client_id=config.client_id,
            secret=config.client_secret,
            tenant=config.tenant,
            redirect_uri=config.redirect_uri,
        )
        changed = sorted(k for k in ("client_id", "tenant", "redirect_uri") if k in data)
        await _audit(
            connection,
            principal.workspace_id,
            "OAUTH_APP_CONFIGURED",
            inbox_id=None,
            api_key_prefix=principal.key_prefix,
            client_address=client_address,
            details={
                "provider": app.provider,
                "created": created,
                "fields": changed + (["clientSecret"] if config.client_secret else []),
            },
        )
    return app


async def list_apps(state: AppState, principal: Principal) -> list[OAuthAppRow]:
    async with state.db.connection() as connection:
        return await oauth_apps.list_apps(connection, principal.workspace_id)


def _client(state: AppState, app: OAuthAppRow) -> oauth_client.Client:
    return oauth_client.Client(
        provider=app.provider,
        client_id=app.client_id,
        client_secret=oauth_apps.client_secret(state.keyring, app),
        tenant=app.tenant,
        redirect_uri=app.redirect_uri,
    )


@dataclass(frozen=True, slots=True)
class StartedConnection:
    authorization_url: str
    expires_at: datetime


def _no_app(provider: str) -> InputInvalid:
    return InputInvalid(
        [
            FieldIssue(
                "provider",
                f"has no OAuth app in this workspace: configure one with configureOAuthApp "
                f"(provider: {provider}) first",
            )
        ]
    )


async def start_connection(
    state: AppState,
    principal: Principal,
    provider: str,
    *,
    email: str | None = None,
    inbox_id: str | None = None,
    servers: Mapping[str, Any] | None = None,
    client_address: str | None = None,
) -> StartedConnection:
    """An authorization URL for the user to open; its ``state`` is single use, expires, and
    completes only in this workspace. With ``inbox_id`` the same inbox gets the new tokens
    (its id and messages stay). ``servers`` (``smtp``/``imap`` without credentials) replace
    the provider's preset for a new inbox: a sovereign cloud, a test server."""
    problems = Problems()
    hint = None
    if email is not None:
        hint = normalize_email(email, "email", problems, allow_private=state.allow_private_hosts)
    problems.raise_if_any()
    if servers:
        # Checked now, as a create would check them, not when the browser comes back.
        normalize_create(
            {"email": hint or "account@example.com", **servers},
            allow_private_hosts=state.allow_private_hosts,
            managed_oauth=True,
        )
    target = parse_id(inbox_id, "inboxId") if inbox_id is not None else None
    state_value, verifier = oauth_client.new_state()
    expires_at = utcnow() + state.oauth.state_ttl
    async with state.db.connection() as connection, connection.transaction():
        app = await oauth_apps.get_app(connection, principal.workspace_id, provider)
        if app is None:
            raise _no_app(provider)
        if target is not None:
            inbox = await inboxes.get_inbox(connection, principal.workspace_id, target)
            hint = hint or inbox.email
            if inbox.auth_method == AuthMethod.OAUTH2 and inbox.oauth_provider not in (
                None,
                provider,
            ):
                raise InputInvalid(
                    [FieldIssue("provider", f"the inbox is connected with {inbox.oauth_provider}")]
                )
        await oauth_apps.create_state(
            connection,
            state.keyring,
            workspace_id=principal.workspace_id,
            provider=provider,
            state=state_value,
            verifier=verifier,
            inbox_id=target,
            email_hint=hint,
            inbox_settings=dict(servers) if servers else None,
            expires_at=expires_at,
            api_key_prefix=principal.key_prefix,
            client_address=client_address,
        )
        await _audit(
            connection,
            principal.workspace_id,
            "OAUTH_CONNECTION_STARTED",
            inbox_id=target,
            api_key_prefix=principal.key_prefix,
            client_address=client_address,
            details={"provider": provider, "email": hint},
        )
    try:
        client = _client(state, app)
    except DecryptionError:
        # Checked now: the code could not be exchanged without it when the browser is back.
        raise InputInvalid(
            [
                FieldIssue(
                    "provider",
                    "the app's stored client secret can no longer be decrypted: give it again "
                    "with configureOAuthApp (clientSecret)",
                )
            ]
        ) from None
    url = oauth_client.authorization_url(state.oauth, client, state_value, verifier, hint)
    return StartedConnection(url, expires_at)


class ConnectionRefused(Exception):
    """The callback could not connect the account. ``message`` is safe to show the user
    (it holds no code, token or secret)."""

    def __init__(self, message: str, code: str = "OAUTH_FAILED") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class CompletedConnection:
    inbox: InboxRow
    created: bool


async def _take(state: AppState, raw_state: str) -> OAuthStateRow:
    # Its own transaction: the state is spent even when what follows fails.
    try:
        async with state.db.connection() as connection, connection.transaction():
            return await oauth_apps.take_state(connection, raw_state)
    except oauth_apps.StateRefused as exc:
        messages = {
            "unknown": "This sign-in link is not known here.",
            "used": "This sign-in link was used already.",
            "expired": "This sign-in link has expired.",
        }
        raise ConnectionRefused(
            messages[exc.reason] + " Start the connection again (startOAuthConnection).",
            code=f"STATE_{exc.reason.upper()}",
        ) from None


async def complete_connection(
    state: AppState, raw_state: str, code: Secret | None, error: str | None
) -> CompletedConnection:
    """The callback's work: spend ``state``, exchange ``code`` (with the PKCE verifier),
    read the account's address, and store the inbox with its tokens, queued for
    verification."""
    started = await _take(state, raw_state)
    if error is not None or code is None:
        raise ConnectionRefused(
            "The provider did not grant access"
            + (f" ({error[:64]})" if error and error.isascii() else "")
            + ". Start the connection again to retry.",
            code="ACCESS_DENIED",
        )
    async with state.db.connection() as connection:
        app = await oauth_apps.get_app(connection, started.workspace_id, started.provider)
    if app is None:
        raise ConnectionRefused("The workspace's OAuth app was removed meanwhile.")
    try:
        client = _client(state, app)
        verifier = oauth_apps.code_verifier(state.keyring, started)
    except DecryptionError:
        raise ConnectionRefused("The stored OAuth app secret can no longer be read.") from None
    try:
        tokens = await oauth_client.exchange_code(state.oauth, client, code, verifier)
        if tokens.refresh_token is None:
            raise ConnectionRefused(
                "The provider granted no refresh token, so inboxd could not keep the "
                "connection alive. Remove inboxd's access in the account's settings and "
                "connect again."
            )
        address, tokens = await oauth_client.account_address(state.oauth, client, tokens)
    except oauth_client.ProviderError as exc:
        log.warning("oauth exchange refused", provider=app.provider, error=exc.code)
        raise ConnectionRefused(
            f"The provider refused the sign-in ({exc.code}). Start the connection again."
        ) from None
    if address is None:
        raise ConnectionRefused("The provider did not say which address this account has.")
    return await _store(state, started, tokens, address.strip().lower())


def _oauth_values(started: OAuthStateRow, tokens: oauth_client.Tokens) -> dict[str, Any]:
    return {
        "auth_method": AuthMethod.OAUTH2.value,
        "oauth_provider": started.provider,
        "oauth_managed": True,
        "oauth_access_token_expires_at": tokens.expires_at,
        "oauth_reauth_required_at": None,
    }


def _secrets(tokens: oauth_client.Tokens) -> dict[str, Secret]:
    assert tokens.refresh_token is not None
    return {"oauth_access_token": tokens.access_token, "oauth_refresh_token": tokens.refresh_token}


async def _store(
    state: AppState, started: OAuthStateRow, tokens: oauth_client.Tokens, address: str
) -> CompletedConnection:
    if started.email_hint and started.email_hint.lower() != address:
        raise ConnectionRefused(
            f"You signed in as {address}, but the connection was started for "
            f"{started.email_hint}. Sign in with that account, or start again without it.",
            code="WRONG_ACCOUNT",
        )
    workspace_id = started.workspace_id
    async with state.db.connection() as connection, connection.transaction():
        existing = started.inbox_id or await inboxes.find_id_by_email(
            connection, workspace_id, address
        )
        if existing is not None:
            current = await inboxes.get_inbox(connection, workspace_id, existing)
            changes = {
                **_oauth_values(started, tokens),
                "smtp_username": address,
                "imap_username": address,
            }
            if current.oauth_provider != started.provider:
                # A token goes only to its provider's servers (or those given at start),
                # never to whatever hosts a password inbox named.
                changes.update(_servers(started, address))
            updated, _ = await inboxes.update_inbox(
                connection,
                workspace_id=workspace_id,
                inbox_id=existing,
                changes=changes,
                new_passwords=_secrets(tokens),
                keyring=state.keyring,
                spacing=state.verification_spacing,
            )
            if updated.version != current.version:
                await _audit(
                    connection,
                    workspace_id,
                    "INBOX_UPDATED",
                    inbox_id=updated.id,
                    api_key_prefix=started.api_key_prefix,
                    client_address=started.client_address,
                    details={"fields": ["oauth"], "provider": started.provider},
                )
            return CompletedConnection(updated, created=False)
    return CompletedConnection(await _create(state, started, tokens, address), created=True)


def _normalized(started: OAuthStateRow, address: str) -> NormalizedInbox:
    preset = preset_for_account(started.provider, address)
    return normalize_create(
        {"email": address, "provider": preset.value, **(started.inbox_settings or {})},
        allow_private_hosts=True,  # the address comes from the provider, not from a user
        managed_oauth=True,
    )


def _servers(started: OAuthStateRow, address: str) -> dict[str, Any]:
    """The provider preset's (or the start's) servers, for an inbox that switches to it."""
    values = _normalized(started, address).values
    keys = ("host", "port", "security", "tls_certificate_sha256")
    return {
        "provider": values["provider"],
        **{f"{side}_{key}": values[f"{side}_{key}"] for side in ("smtp", "imap") for key in keys},
    }


async def _create(
    state: AppState, started: OAuthStateRow, tokens: oauth_client.Tokens, address: str
) -> InboxRow:
    normalized = _normalized(started, address)
    normalized.values.update(_oauth_values(started, tokens))
    async with state.db.connection() as connection:
        return await inboxes.create_inbox(
            connection,
            workspace_id=started.workspace_id,
            values=normalized.values,
            smtp_password=None,
            imap_password=None,
            tokens=_secrets(tokens),
            keyring=state.keyring,
            audit=inboxes.AuditNote(
                started.api_key_prefix,
                started.client_address,
                {"email": address, "provider": started.provider},
            ),
            spacing=state.verification_spacing,
        )
