"""Talking to an OAuth provider (Google, Microsoft): the authorization URL, the code exchange,
the refresh, and the account's address, through authlib's httpx client.

The provider's endpoints are fixed per provider; only the server's settings
(``INBOXD_OAUTH_*_URL``) move them, for sovereign clouds and for tests. Nothing here logs or
raises a token: errors carry the provider's error code (``invalid_grant``) and no more.
"""

from __future__ import annotations

import dataclasses
import ssl
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 fork and warns when it uses httpx, which it supports.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from storage.models import OAuthProvider, utcnow
from storage.secrets import Secret

GOOGLE_SCOPES = ("https://mail.google.com/", "openid", "email")
MICROSOFT_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
    "openid",
    "email",
)
# A token for Outlook's resource does not open Graph: the address is read with a second
# token, redeemed from the refresh token for Graph's User.Read (never stored).
MICROSOFT_GRAPH_SCOPE = "https://graph.microsoft.com/User.Read"


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    authorize_url: str  # may hold ``{tenant}``
    token_url: str  # may hold ``{tenant}``
    address_url: str
    scopes: tuple[str, ...]
    # Extra authorization parameters (Google hands out a refresh token only when asked).
    authorize_params: tuple[tuple[str, str], ...] = ()
    # The scope of the token that reads the address; None: the access token itself.
    address_scope: str | None = None


def google_endpoints() -> ProviderEndpoints:
    return ProviderEndpoints(
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        address_url="https://openidconnect.googleapis.com/v1/userinfo",
        scopes=GOOGLE_SCOPES,
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    )


def microsoft_endpoints() -> ProviderEndpoints:
    return ProviderEndpoints(
        authorize_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        address_url="https://graph.microsoft.com/v1.0/me",
        scopes=MICROSOFT_SCOPES,
        address_scope=MICROSOFT_GRAPH_SCOPE,
    )


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """The ``INBOXD_OAUTH_*`` settings resolvers apply."""

    google: ProviderEndpoints = field(default_factory=google_endpoints)
    microsoft: ProviderEndpoints = field(default_factory=microsoft_endpoints)
    state_ttl: timedelta = timedelta(minutes=10)
    timeout: float = 10.0
    # An access token expiring within this is refreshed before use.
    refresh_margin: timedelta = timedelta(minutes=5)
    # A PEM bundle the provider's certificate is checked against (besides the system's).
    ca_file: str | None = None

    def endpoints(self, provider: str) -> ProviderEndpoints:
        return self.google if provider == OAuthProvider.GOOGLE else self.microsoft


def with_overrides(
    base: ProviderEndpoints,
    authorize_url: str | None,
    token_url: str | None,
    address_url: str | None,
) -> ProviderEndpoints:
    """``base`` with the URLs a server setting moved."""
    return dataclasses.replace(
        base,
        authorize_url=authorize_url or base.authorize_url,
        token_url=token_url or base.token_url,
        address_url=address_url or base.address_url,
    )


@dataclass(frozen=True, slots=True)
class Client:
    """One workspace's app at one provider, with its secret."""

    provider: str
    client_id: str
    client_secret: Secret
    tenant: str | None
    redirect_uri: str


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: Secret
    expires_at: datetime | None
    refresh_token: Secret | None


class ProviderError(Exception):
    """The provider refused or could not be reached. ``code`` is its OAuth error code
    (``invalid_grant``: the grant is revoked or expired) or ``unreachable``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"the OAuth provider answered {code}")
        self.code = code

    @property
    def grant_refused(self) -> bool:
        return self.code == "invalid_grant"


def _url(template: str, client: Client) -> str:
    return template.replace("{tenant}", client.tenant or "common")


def _verify(config: OAuthConfig) -> ssl.SSLContext | bool:
    if not config.ca_file:
        return True
    context = ssl.create_default_context(cafile=config.ca_file)
    context.load_default_certs()
    return context


def _http(config: OAuthConfig, client: Client, **kwargs: Any) -> AsyncOAuth2Client:
    verify = _verify(config)
    return AsyncOAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret.reveal(),
        token_endpoint_auth_method="client_secret_post",
        redirect_uri=client.redirect_uri,
        code_challenge_method="S256",
        timeout=config.timeout,
        verify=verify,
        **kwargs,
    )


def new_state() -> tuple[Secret, Secret]:
    """A fresh ``state`` and PKCE code verifier (RFC 7636: 43 to 128 characters)."""
    return Secret(generate_token(43)), Secret(generate_token(64))


def authorization_url(
    config: OAuthConfig, client: Client, state: Secret, verifier: Secret, login_hint: str | None
) -> str:
    endpoints = config.endpoints(client.provider)
    oauth = _http(config, client, scope=" ".join(endpoints.scopes))
    params = dict(endpoints.authorize_params)
    if login_hint:
        params["login_hint"] = login_hint
    url, _ = oauth.create_authorization_url(
        _url(endpoints.authorize_url, client),
        state=state.reveal(),
        code_verifier=verifier.reveal(),
        **params,
    )
    return str(url)


def _tokens(token: dict[str, Any], previous_refresh: Secret | None = None) -> Tokens:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError("no_access_token")
    expires_at = None
    if isinstance(token.get("expires_in"), int | float | str):
        try:
            expires_at = utcnow() + timedelta(seconds=float(token["expires_in"]))
        except ValueError:
            expires_at = None
    refresh = token.get("refresh_token")
    return Tokens(
        Secret(access),
        expires_at,
        Secret(refresh) if isinstance(refresh, str) and refresh else previous_refresh,
    )


async def _call(coroutine: Any) -> dict[str, Any]:
    try:
        token: dict[str, Any] = await coroutine
    except OAuthError as exc:
        raise ProviderError(str(exc.error or "oauth_error")) from None
    except (httpx.HTTPError, ValueError, TypeError):
        # No detail: an httpx error's text may carry the request (and its form body).
        raise ProviderError("unreachable") from None
    return token


async def exchange_code(
    config: OAuthConfig, client: Client, code: Secret, verifier: Secret
) -> Tokens:
    endpoints = config.endpoints(client.provider)
    async with _http(config, client) as oauth:
        token = await _call(
            oauth.fetch_token(
                _url(endpoints.token_url, client),
                grant_type="authorization_code",
                code=code.reveal(),
                code_verifier=verifier.reveal(),
                redirect_uri=client.redirect_uri,
            )
        )
    return _tokens(token)


async def refresh(
    config: OAuthConfig, client: Client, refresh_token: Secret, scope: str | None = None
) -> Tokens:
    """New tokens for ``refresh_token``; ProviderError("invalid_grant") when it is refused."""
    endpoints = config.endpoints(client.provider)
    kwargs = {"scope": scope} if scope else {}
    async with _http(config, client) as oauth:
        token = await _call(
            oauth.refresh_token(
                _url(endpoints.token_url, client),
                refresh_token=refresh_token.reveal(),
                **kwargs,
            )
        )
    return _tokens(token, previous_refresh=refresh_token)


async def account_address(
    config: OAuthConfig, client: Client, tokens: Tokens
) -> tuple[str | None, Tokens]:
    """The account's email address (Google's userinfo ``email``, Microsoft Graph ``me``'s
    ``mail`` or ``userPrincipalName``), and the tokens to keep: a provider that rotates
    refresh tokens (Microsoft) hands a new one with the Graph token."""
    endpoints = config.endpoints(client.provider)
    bearer = tokens.access_token
    if endpoints.address_scope and tokens.refresh_token is not None:
        graph = await refresh(config, client, tokens.refresh_token, endpoints.address_scope)
        bearer = graph.access_token
        tokens = dataclasses.replace(tokens, refresh_token=graph.refresh_token)
    async with httpx.AsyncClient(timeout=config.timeout, verify=_verify(config)) as http:
        try:
            answer = await http.get(
                endpoints.address_url, headers={"Authorization": f"Bearer {bearer.reveal()}"}
            )
            answer.raise_for_status()
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            raise ProviderError("unreachable") from None
    if isinstance(body, dict):
        for key in ("email", "mail", "userPrincipalName"):
            value = body.get(key)
            if isinstance(value, str) and "@" in value:
                return value, tokens
    return None, tokens
