"""Input rules for OAuth: an app's configuration, and an externally managed access token."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from mail.presets import PRESETS, Provider
from resolvers.validation_issues import NUL_MESSAGE, Problems, refuse_nul
from storage.models import OAuthProvider
from storage.secrets import Secret

MAX_CLIENT_ID = 512
MAX_CLIENT_SECRET = 2048
MAX_TENANT = 256
MAX_REDIRECT_URI = 2048
MAX_ACCESS_TOKEN = 8192
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class AppConfiguration:
    provider: str
    client_id: str
    client_secret: Secret | None
    tenant: str | None
    redirect_uri: str


def _text(value: Any, field_name: str, limit: int, problems: Problems) -> str | None:
    text = str(value or "").strip()
    if not text:
        problems.error(field_name, "must not be empty")
        return None
    if len(text) > limit:
        problems.error(field_name, f"must be at most {limit} characters")
        return None
    if any(ch.isspace() for ch in text):
        problems.error(field_name, "must not contain spaces")
        return None
    return text


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_redirect_uri(value: Any, problems: Problems) -> str | None:
    """An absolute https URL (http only on loopback, for a server on one's own machine),
    without a fragment: the provider sends the browser back to it with the code."""
    uri = _text(value, "redirectUri", MAX_REDIRECT_URI, problems)
    if uri is None:
        return None
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        problems.error("redirectUri", "is not a valid URL")
        return None
    if parts.scheme not in ("https", "http") or not host:
        problems.error("redirectUri", "must be an absolute https URL")
    elif parts.scheme == "http" and not _loopback(host):
        problems.error("redirectUri", "must use https (http only on localhost)")
    elif parts.fragment:
        problems.error("redirectUri", "must not have a #fragment")
    else:
        return uri
    return None


def normalize_app(data: Mapping[str, Any], *, creating: bool) -> AppConfiguration:
    """``configureOAuthApp``'s input; the secret may be left out when changing an app."""
    refuse_nul({k: v for k, v in data.items() if k != "client_secret"})
    problems = Problems()
    provider = OAuthProvider(data["provider"]).value
    client_id = _text(data.get("client_id"), "clientId", MAX_CLIENT_ID, problems)
    secret: Secret | None = data.get("client_secret")
    if not secret:
        secret = None
        if creating:
            problems.error("clientSecret", "is required")
    elif len(secret.reveal()) > MAX_CLIENT_SECRET:
        problems.error("clientSecret", f"must be at most {MAX_CLIENT_SECRET} characters")
    elif "\x00" in secret.reveal():
        problems.error("clientSecret", NUL_MESSAGE)
    tenant = None
    if provider == OAuthProvider.MICROSOFT:
        if data.get("tenant"):
            tenant = _text(data["tenant"], "tenant", MAX_TENANT, problems)
            if tenant and not all(ch.isalnum() or ch in "-._" for ch in tenant):
                problems.error("tenant", "must be a tenant id, a domain, or common/organizations")
        else:
            tenant = "common"
    elif data.get("tenant"):
        problems.error("tenant", "applies to MICROSOFT only")
    redirect_uri = normalize_redirect_uri(data.get("redirect_uri"), problems)
    problems.raise_if_any()
    assert client_id is not None and redirect_uri is not None
    return AppConfiguration(provider, client_id, secret, tenant, redirect_uri)


@dataclass(frozen=True, slots=True)
class ExternalToken:
    access_token: Secret
    expires_at: datetime


def normalize_external_token(
    value: Mapping[str, Any] | None, problems: Problems, *, now: datetime
) -> ExternalToken | None:
    """``oauth2 { accessToken expiresAt }``: a token someone else refreshes."""
    if not value:
        problems.error("oauth2", "must hold accessToken and expiresAt")
        return None
    token: Secret | None = value.get("access_token")
    expires_at = value.get("expires_at")
    if not token:
        problems.error("oauth2.accessToken", "must not be empty")
        token = None
    elif len(token.reveal()) > MAX_ACCESS_TOKEN:
        problems.error("oauth2.accessToken", f"must be at most {MAX_ACCESS_TOKEN} characters")
        token = None
    elif any(ord(ch) < 33 or ord(ch) == 127 for ch in token.reveal()):
        problems.error("oauth2.accessToken", "must not contain spaces or control characters")
        token = None
    if not isinstance(expires_at, datetime):
        problems.error("oauth2.expiresAt", "is required")
        return None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at <= now:
        problems.error("oauth2.expiresAt", "is in the past: the token has expired")
        return None
    return None if token is None else ExternalToken(token, expires_at)


def oauth_provider_of(provider: str) -> str | None:
    """The OAuth provider behind a mail provider preset (GMAIL: GOOGLE), if any."""
    if provider == Provider.GMAIL:
        return OAuthProvider.GOOGLE.value
    if provider in (Provider.OFFICE365, Provider.OUTLOOK):
        return OAuthProvider.MICROSOFT.value
    return None


def preset_for_account(provider: str, email: str) -> Provider:
    """The mail provider preset an OAuth account's servers come from: Gmail for Google;
    Outlook.com for Microsoft's consumer domains, Microsoft 365 otherwise."""
    if provider == OAuthProvider.GOOGLE:
        return Provider.GMAIL
    domain = email.rpartition("@")[2].lower()
    if domain in PRESETS[Provider.OUTLOOK].domains:
        return Provider.OUTLOOK
    return Provider.OFFICE365
