"""The GraphQL contract of OAuth: a workspace's apps, starting a connection, an inbox's login."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import UNSET

from resolvers import oauth
from schema.context import Info, caller
from schema.enums import AuthMethod, OAuthProvider, Security
from schema.errors import NotFound, ValidationError
from schema.inputs import provided
from schema.mutating import mutate
from storage import models
from storage.models import Permission
from storage.rows import InboxRow, OAuthAppRow

_OAUTH_PROVIDER = {m.value: m for m in models.OAuthProvider}
_AUTH_METHOD = {m.value: m for m in models.AuthMethod}


@strawberry.type(description="A workspace's OAuth client at a provider. The secret is write-only.")
class OAuthApp:
    id: strawberry.ID
    provider: OAuthProvider  # type: ignore[valid-type]
    client_id: str
    has_client_secret: bool
    tenant: str | None = strawberry.field(description="Microsoft Entra tenant; null for Google.")
    redirect_uri: str = strawberry.field(
        description="Registered with the provider; it must reach inboxd's /oauth/callback."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: OAuthAppRow) -> OAuthApp:
        return cls(
            id=strawberry.ID(str(row.id)),
            provider=_OAUTH_PROVIDER[row.provider],
            client_id=row.client_id,
            has_client_secret=bool(row.client_secret),
            tenant=row.tenant,
            redirect_uri=row.redirect_uri,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(description="How an OAuth inbox logs in. Tokens are never returned.")
class InboxOAuth:
    provider: OAuthProvider | None  # type: ignore[valid-type]
    managed: bool = strawberry.field(
        description="true: inboxd refreshes the tokens (startOAuthConnection). false: the "
        "access token was given with oauth2 and must be replaced before it expires."
    )
    access_token_expires_at: datetime | None
    reauth_required_at: datetime | None = strawberry.field(
        description="Set when the provider refused the refresh token or the given token "
        "expired: connect again (startOAuthConnection with inboxId, or a new oauth2 token)."
    )


def inbox_login(row: InboxRow) -> tuple[AuthMethod, InboxOAuth | None]:  # type: ignore[valid-type]
    """``EmailInbox.authMethod`` and ``EmailInbox.oauth`` of a row."""
    method = _AUTH_METHOD[row.auth_method]
    if row.auth_method != models.AuthMethod.OAUTH2:
        return method, None
    return method, InboxOAuth(
        provider=_OAUTH_PROVIDER.get(row.oauth_provider or ""),
        managed=row.oauth_managed,
        access_token_expires_at=row.oauth_access_token_expires_at,
        reauth_required_at=row.oauth_reauth_required_at,
    )


@strawberry.input(description="Creates the workspace's app for the provider, or changes it.")
class ConfigureOAuthAppInput:
    provider: OAuthProvider  # type: ignore[valid-type]
    client_id: str
    client_secret: str | None = strawberry.field(
        default=UNSET, description="Write-only. Required the first time; omitted keeps it."
    )
    tenant: str | None = strawberry.field(
        default=UNSET,
        description="Microsoft only: the Entra tenant id or domain (default: common).",
    )
    redirect_uri: str = strawberry.field(
        description="https://<inboxd>/oauth/callback, as registered with the provider."
    )


@strawberry.input(description="Server settings replacing the provider's preset (no login).")
class OAuthServerInput:
    host: str | None = UNSET
    port: int | None = UNSET
    security: Security | None = UNSET  # type: ignore[valid-type]
    tls_certificate_sha256: str | None = UNSET


@strawberry.type
class ConfigureOAuthAppSuccess:
    app: OAuthApp


ConfigureOAuthAppPayload = Annotated[
    ConfigureOAuthAppSuccess | ValidationError,
    strawberry.union("ConfigureOAuthAppPayload"),
]


@strawberry.type
class StartOAuthConnectionSuccess:
    authorization_url: str = strawberry.field(
        description="Open it in the account owner's browser; the provider sends them back to "
        "the app's redirectUri, which creates (or reconnects) the inbox."
    )
    expires_at: datetime = strawberry.field(description="The URL works once, until then.")


StartOAuthConnectionPayload = Annotated[
    StartOAuthConnectionSuccess | ValidationError | NotFound,
    strawberry.union("StartOAuthConnectionPayload"),
]


@strawberry.type
class OAuthMutation:
    @strawberry.mutation(
        name="configureOAuthApp",
        description="Set the workspace's OAuth client for Google or Microsoft (secret "
        "encrypted, never returned).",
    )
    async def configure_oauth_app(
        self, info: Info, input: ConfigureOAuthAppInput
    ) -> ConfigureOAuthAppPayload:
        return await mutate(
            info,
            lambda c: oauth.configure_app(
                c.state, c.principal, provided(input), client_address=c.client_address
            ),
            lambda row: ConfigureOAuthAppSuccess(app=OAuthApp.from_row(row)),
        )

    @strawberry.mutation(
        name="startOAuthConnection",
        description="An authorization URL (state and PKCE S256) connecting a Gmail or "
        "Microsoft 365 account as an inbox; with inboxId, that inbox is reconnected (its id "
        "and messages stay), e.g. after REAUTH_REQUIRED. smtp/imap replace the provider's "
        "servers for a new inbox.",
    )
    async def start_oauth_connection(
        self,
        info: Info,
        provider: OAuthProvider,  # type: ignore[valid-type]
        email: str | None = None,
        inbox_id: strawberry.ID | None = None,
        smtp: OAuthServerInput | None = None,
        imap: OAuthServerInput | None = None,
    ) -> StartOAuthConnectionPayload:
        servers = {k: provided(v) for k, v in (("smtp", smtp), ("imap", imap)) if v}
        return await mutate(
            info,
            lambda c: oauth.start_connection(
                c.state,
                c.principal,
                provider.value,  # type: ignore[attr-defined]
                email=email,
                inbox_id=inbox_id,
                servers=servers,
                client_address=c.client_address,
            ),
            lambda started: StartOAuthConnectionSuccess(
                authorization_url=started.authorization_url, expires_at=started.expires_at
            ),
        )


@strawberry.type
class OAuthQuery:
    @strawberry.field(description="The workspace's OAuth apps (secrets never shown).")
    async def oauth_apps(self, info: Info) -> list[OAuthApp]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        rows = await oauth.list_apps(info.context.state, principal)
        return [OAuthApp.from_row(row) for row in rows]
