"""The test OAuth provider (tests/support/oauth_provider.py) behaves as RFC 6749 / 7636 / 7662
say, over real HTTP: what the OAuth tests prove is only as good as this peer."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.oauth_provider import OAuthClient, OAuthProvider, pkce_challenge

REDIRECT = "http://127.0.0.1:9/oauth/callback"
USER = "carol@example.test"
SCOPE = "https://mail.google.com/ openid email"


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthProvider]:
    with OAuthProvider() as running:
        running.add_user(USER)
        running.add_user("dave@example.test", user_principal_name="dave@tenant.test")
        yield running


@pytest.fixture
def client(provider: OAuthProvider) -> OAuthClient:
    return provider.register_client([REDIRECT])


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as session:
        yield session


def authorization_url(
    provider: OAuthProvider, client: OAuthClient, verifier: str, **overrides: str
) -> str:
    params = {
        "client_id": client.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "state": "st-123",
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"{provider.authorize_url}?{urlencode(params)}"


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def get_code(provider: OAuthProvider, client: OAuthClient, verifier: str) -> str:
    location = await provider.consent(authorization_url(provider, client, verifier))
    assert location.startswith(REDIRECT + "?")
    query = query_of(location)
    assert query["state"] == "st-123"
    return query["code"]


async def redeem(
    http: httpx.AsyncClient, provider: OAuthProvider, client: OAuthClient, code: str, verifier: str
) -> httpx.Response:
    return await http.post(
        provider.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        },
    )


def verifier() -> str:
    return secrets.token_urlsafe(48)


async def test_code_flow_with_pkce_then_userinfo_and_graph_me(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    code = await get_code(provider, client, v)
    response = await redeem(http, provider, client, code, v)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"].startswith("rt.")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    info = (await http.get(provider.userinfo_url, headers=bearer)).json()
    assert info["email"] == USER and info["email_verified"] is True
    me = (await http.get(provider.graph_me_url, headers=bearer)).json()
    assert me["mail"] == USER and me["userPrincipalName"] == USER
    assert provider.token_requests["authorization_code"] >= 1


async def test_login_hint_picks_the_user_and_graph_me_has_the_upn(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    url = authorization_url(provider, client, v, login_hint="dave@example.test")
    code = query_of(await provider.consent(url))["code"]
    token = (await redeem(http, provider, client, code, v)).json()["access_token"]
    me = await http.get(provider.graph_me_url, headers={"Authorization": f"Bearer {token}"})
    assert me.json()["userPrincipalName"] == "dave@tenant.test"


async def test_client_secret_basic_authenticates_too(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    code = await get_code(provider, client, v)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": v,
    }
    basic = base64.b64encode(f"{client.client_id}:{client.client_secret}".encode()).decode()
    response = await http.post(
        provider.token_url, data=data, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200, response.text


async def test_wrong_secret_is_invalid_client(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    code = await get_code(provider, client, v)
    wrong = OAuthClient(client.client_id, "not-the-secret", [REDIRECT])
    response = await redeem(http, provider, wrong, code, v)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_wrong_verifier_and_reused_code_are_invalid_grant(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    code = await get_code(provider, client, v)
    bad = await redeem(http, provider, client, code, verifier())
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")

    v = verifier()
    code = await get_code(provider, client, v)
    first = (await redeem(http, provider, client, code, v)).json()
    again = await redeem(http, provider, client, code, v)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    # A replayed code revokes what it issued (RFC 6749 section 4.1.2).
    assert provider.valid_user(first["access_token"]) is None
    refreshed = await http.post(
        provider.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        },
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_authorize_refusals(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    unknown = await http.get(authorization_url(provider, client, v, client_id="nobody"))
    assert unknown.status_code == 400  # never redirected to an unchecked URI
    elsewhere = await http.get(
        authorization_url(provider, client, v, redirect_uri="http://127.0.0.1:9/other")
    )
    assert elsewhere.status_code == 400
    plain = await provider.consent(
        authorization_url(provider, client, v, code_challenge_method="plain")
    )
    assert query_of(plain)["error"] == "invalid_request"
    scope = await provider.consent(authorization_url(provider, client, v, scope="admin"))
    assert query_of(scope)["error"] == "invalid_scope"
    token = await provider.consent(authorization_url(provider, client, v, response_type="token"))
    assert query_of(token)["error"] == "unsupported_response_type"
    provider.refuse_consent = True
    try:
        refused = query_of(await provider.consent(authorization_url(provider, client, v)))
    finally:
        provider.refuse_consent = False
    assert refused == {
        "error": "access_denied",
        "error_description": refused["error_description"],
        "state": "st-123",
    }


async def test_refresh_then_revocation_is_invalid_grant(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    email = f"r{secrets.token_hex(3)}@example.test"
    tokens = provider.issue_tokens(email, client.client_id)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token or "",
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    before = provider.token_requests["refresh_token"]
    fresh = (await http.post(provider.token_url, data=form)).json()
    assert fresh["access_token"] != tokens.access_token
    assert "refresh_token" not in fresh  # not rotated by default (Google's way)
    assert provider.valid_user(fresh["access_token"]) == email
    provider.revoke_user(email)
    refused = await http.post(provider.token_url, data=form)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert provider.valid_user(fresh["access_token"]) is None
    assert provider.token_requests["refresh_token"] == before + 2


async def test_expired_refresh_token_is_invalid_grant(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    email = f"x{secrets.token_hex(3)}@example.test"
    tokens = provider.issue_tokens(email, client.client_id)
    provider.expire_refresh_tokens(email)
    refused = await http.post(
        provider.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token or "",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        },
    )
    assert refused.json()["error"] == "invalid_grant"


async def test_rotation_and_configured_lifetime(http: httpx.AsyncClient) -> None:
    with OAuthProvider(
        access_token_lifetime=timedelta(seconds=90), rotate_refresh_tokens=True
    ) as provider:
        client = provider.register_client([REDIRECT])
        tokens = provider.issue_tokens(USER, client.client_id)
        assert tokens.expires_in == 90
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token or "",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        }
        rotated = (await http.post(provider.token_url, data=form)).json()
        assert rotated["expires_in"] == 90
        assert rotated["refresh_token"] != tokens.refresh_token
        stale = await http.post(provider.token_url, data=form)
        assert stale.json()["error"] == "invalid_grant"


async def test_introspection_and_tokeninfo_as_dovecot_reads_them(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    tokens = provider.issue_tokens(USER, client.client_id)
    active = await http.post(provider.introspection_url, data={"token": tokens.access_token})
    assert active.json()["active"] is True
    assert active.json()["email"] == USER
    info = await http.get(provider.tokeninfo_url + tokens.access_token)
    assert info.status_code == 200 and info.json()["email"] == USER
    provider.expire_access_token(tokens.access_token)
    inactive = await http.post(provider.introspection_url, data={"token": tokens.access_token})
    assert inactive.json() == {"active": False}
    gone = await http.get(provider.tokeninfo_url + tokens.access_token)
    assert gone.status_code == 400
    unauthorized = await http.get(
        provider.userinfo_url, headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert unauthorized.status_code == 401
    assert "invalid_token" in unauthorized.headers["www-authenticate"]


def test_secrets_lists_every_credential_handed_out(
    provider: OAuthProvider, client: OAuthClient
) -> None:
    tokens = provider.issue_tokens(USER, client.client_id)
    handed_out = set(provider.secrets())
    assert {tokens.access_token, tokens.refresh_token, client.client_secret} <= handed_out


async def test_microsoft_shaped_urls_record_the_tenant_and_an_outage_is_a_503(
    provider: OAuthProvider, client: OAuthClient, http: httpx.AsyncClient
) -> None:
    v = verifier()
    url = authorization_url(provider, client, v).replace(
        provider.authorize_url, provider.microsoft_authorize_url("contoso")
    )
    code = query_of(await provider.consent(url))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": v,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    tokens = await http.post(provider.microsoft_token_url("contoso"), data=form)
    assert tokens.status_code == 200, tokens.text
    assert provider.tenants[-2:] == ["contoso", "contoso"]

    provider.token_endpoint_status = 503
    try:
        down = await http.post(provider.token_url, data=form)
    finally:
        provider.token_endpoint_status = None
    assert (down.status_code, down.json()["error"]) == (503, "temporarily_unavailable")


def test_expire_access_tokens_keeps_the_grant(provider: OAuthProvider, client: OAuthClient) -> None:
    email = f"e{secrets.token_hex(3)}@example.test"
    first = provider.issue_tokens(email, client.client_id)
    provider.expire_access_tokens(email)
    assert provider.valid_user(first.access_token) is None
    assert provider.refresh_tokens[first.refresh_token or ""].usable
