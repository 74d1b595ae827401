"""How inboxd logs in to an inbox's servers: the ``Endpoint`` for each side, with its password
or a fresh OAuth access token.

A managed token expiring within ``refresh_margin`` is refreshed first; a token a server
refused (TOKEN_REJECTED) is refreshed once when the caller asks with ``rejected``. Refreshes
take a per-inbox lock (``storage.inbox_tokens``), so two processes never both refresh: the
second finds the first's token. A refresh token the provider refuses (``invalid_grant``), or
an external token that expired or was refused, makes the inbox FAILED (ReauthRequired): the
account must be connected again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import structlog

from mail.endpoint import Endpoint, Login
from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.presets import Security
from mail.results import ProbeCode
from resolvers import oauth_client
from resolvers.oauth_client import OAuthConfig
from storage import inbox_passwords, inbox_tokens, oauth_apps
from storage.db import Database
from storage.models import AuthMethod, utcnow
from storage.rows import InboxRow
from storage.secrets import DecryptionError, KeyRing, Secret

log = structlog.get_logger("inboxd.logins")

REAUTH_HINT = (
    "Connect the account again: startOAuthConnection with this inbox's id (its messages and "
    "settings stay)."
)
EXTERNAL_HINT = "Give a new access token: updateEmailInbox with oauth2 { accessToken expiresAt }."
# The status reason of an inbox whose externally managed token ran out (set by the workers
# at its expiry, storage.inbox_tokens.expire_external_tokens).
EXTERNAL_EXPIRED_REASON = (
    "REAUTH_REQUIRED: The access token given with oauth2 has expired; inboxd cannot refresh "
    f"it. {EXTERNAL_HINT}"
)


# The provider's answers that only a new consent (or a new app secret) can cure; any other
# (temporarily_unavailable, server_error, no answer) is retried later.
GRANT_REFUSED = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope", "no_app"}
)


class ReauthRequired(Exception):
    """The inbox's OAuth grant is gone (revoked, expired, refused): connect it again."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class TokenUnavailable(Exception):
    """The provider could not be asked for a new token now (network, 5xx): try again later."""

    def __init__(self, code: str) -> None:
        super().__init__(f"the OAuth provider could not refresh the token ({code})")
        self.code = code


def is_oauth(inbox: InboxRow) -> bool:
    return inbox.auth_method == AuthMethod.OAUTH2


def password_endpoint(inbox: InboxRow, side: str, keyring: KeyRing) -> Endpoint:
    """The side's endpoint with its stored password; DecryptionError when unreadable."""
    return endpoint_with(
        inbox,
        side,
        inbox_passwords.decrypt_password(keyring, inbox, f"{side}_password"),
        Login.PASSWORD,
    )


def endpoint_with(inbox: InboxRow, side: str, secret: Secret, login: Login) -> Endpoint:
    return Endpoint(
        host=getattr(inbox, f"{side}_host"),
        port=getattr(inbox, f"{side}_port"),
        security=Security(getattr(inbox, f"{side}_security")),
        username=getattr(inbox, f"{side}_username"),
        password=secret,
        tls_certificate_sha256=getattr(inbox, f"{side}_tls_certificate_sha256"),
        login=login,
    )


@dataclass(frozen=True, slots=True)
class Logins:
    db: Database
    keyring: KeyRing
    oauth: OAuthConfig

    async def endpoint(
        self, inbox: InboxRow, side: str, *, rejected: Secret | None = None
    ) -> Endpoint:
        """The side's endpoint, ready to log in. DecryptionError: a stored secret is
        unreadable; ReauthRequired; TokenUnavailable."""
        if not is_oauth(inbox):
            return password_endpoint(inbox, side, self.keyring)
        token = await self.access_token(inbox, rejected=rejected)
        return endpoint_with(inbox, side, token, Login.OAUTH2)

    async def endpoints(
        self, inbox: InboxRow, *, rejected: Secret | None = None
    ) -> tuple[Endpoint, Endpoint]:
        """SMTP's and IMAP's endpoints (one access token for both)."""
        if not is_oauth(inbox):
            return (
                password_endpoint(inbox, "smtp", self.keyring),
                password_endpoint(inbox, "imap", self.keyring),
            )
        token = await self.access_token(inbox, rejected=rejected)
        return (
            endpoint_with(inbox, "smtp", token, Login.OAUTH2),
            endpoint_with(inbox, "imap", token, Login.OAUTH2),
        )

    def _fresh(self, inbox: InboxRow, margin: timedelta) -> bool:
        expires = inbox.oauth_access_token_expires_at
        return expires is None or expires - margin > utcnow()

    async def access_token(self, inbox: InboxRow, *, rejected: Secret | None = None) -> Secret:
        stored = inbox_passwords.decrypt_password(self.keyring, inbox, "oauth_access_token")
        if not inbox.oauth_managed:
            # Nobody here can refresh it: used until it expires or a server refuses it.
            if rejected is None and self._fresh(inbox, timedelta(0)):
                return stored
            reason = "refused by the mail server" if rejected else "expired"
            await self._require_reauth(
                inbox,
                f"The access token given with oauth2 has {reason}; inboxd cannot refresh it.",
                EXTERNAL_HINT,
            )
        if rejected is None and self._fresh(inbox, self.oauth.refresh_margin):
            return stored
        return await self._refresh(inbox, rejected)

    async def _refresh(self, inbox: InboxRow, rejected: Secret | None) -> Secret:
        refused: str | None = None
        async with self.db.connection(background=True) as connection, connection.transaction():
            current = await inbox_tokens.lock_for_refresh(connection, inbox.id)
            if current is None or not is_oauth(current):
                raise ReauthRequired("The inbox's OAuth login was removed.", REAUTH_HINT)
            stored = inbox_passwords.decrypt_password(self.keyring, current, "oauth_access_token")
            if stored != rejected and self._fresh(current, self.oauth.refresh_margin):
                return stored  # another process refreshed it meanwhile
            app = await oauth_apps.get_app(
                connection, current.workspace_id, current.oauth_provider or ""
            )
            try:
                if app is None:
                    raise oauth_client.ProviderError("no_app")
                client = oauth_client.Client(
                    app.provider,
                    app.client_id,
                    oauth_apps.client_secret(self.keyring, app),
                    app.tenant,
                    app.redirect_uri,
                )
                refresh_token = inbox_passwords.decrypt_password(
                    self.keyring, current, "oauth_refresh_token"
                )
                tokens = await oauth_client.refresh(self.oauth, client, refresh_token)
            except oauth_client.ProviderError as exc:
                if exc.code not in GRANT_REFUSED:
                    log.warning("oauth refresh failed", inbox_id=str(inbox.id), error=exc.code)
                    raise TokenUnavailable(exc.code) from None
                refused = exc.code
            except DecryptionError:
                refused = "unreadable"
            if refused is None:
                await inbox_tokens.store_refreshed(
                    connection,
                    self.keyring,
                    current.id,
                    access_token=tokens.access_token,
                    expires_at=tokens.expires_at,
                    refresh_token=tokens.refresh_token
                    if tokens.refresh_token != refresh_token
                    else None,
                )
                log.info("oauth token refreshed", inbox_id=str(inbox.id))
                return tokens.access_token
        # Outside the lock's transaction: what follows writes the inbox and announces it.
        log.warning("oauth refresh refused", inbox_id=str(inbox.id), error=refused)
        await self._require_reauth(
            current,
            f"The provider refused to refresh the access token ({refused}): the account's "
            "consent was revoked or has expired.",
            REAUTH_HINT,
        )

    async def _require_reauth(self, inbox: InboxRow, message: str, hint: str) -> NoReturn:
        async with self.db.connection(background=True) as connection:
            await inbox_tokens.require_reauth(connection, inbox, f"REAUTH_REQUIRED: {message}")
        raise ReauthRequired(message, hint)


async def open_imap(
    logins: Logins, inbox: InboxRow, settings: SessionSettings
) -> tuple[ImapSession, Endpoint]:
    """A logged-in IMAP session for receiving, and the endpoint it used. An OAuth inbox whose
    token the server refuses gets one refreshed token and one more login."""
    endpoint = await logins.endpoint(inbox, "imap")
    try:
        return await ImapSession.open(endpoint, settings), endpoint
    except ImapSessionError as exc:
        refused = exc.code == ProbeCode.TOKEN_REJECTED
        if not (refused and is_oauth(inbox) and isinstance(endpoint.password, Secret)):
            raise
    endpoint = await logins.endpoint(inbox, "imap", rejected=endpoint.password)
    return await ImapSession.open(endpoint, settings), endpoint
