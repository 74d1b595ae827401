"""A small OAuth 2.0 provider for tests, speaking real HTTP on 127.0.0.1.

``OAuthProvider`` is a Starlette app served by uvicorn in a thread of its own (like the mail
servers in ``tests.support.mailservers``), so it answers sync and async tests alike, and the
test mail servers' threads (aiosmtpd, Dovecot's auth process) can ask it about a token while
the test's loop waits on a probe. Endpoints, all under ``base_url``:

- ``GET /authorize`` (and Microsoft's ``/{tenant}/oauth2/v2.0/authorize``, likewise for the
  token endpoint): the authorization code flow with PKCE (S256 only). It checks client_id
  and redirect_uri (a bad one gets a 400 page, never a redirect), response_type=code, scope
  and state, then consents for the user (``login_hint`` if it names a user, else
  ``default_user``) and answers 302 to ``redirect_uri?code=...&state=...``; with
  ``refuse_consent`` set it redirects with ``error=access_denied`` instead.
- ``POST /token``: ``authorization_code`` (PKCE checked, code single-use: a second use
  revokes what the first issued) and ``refresh_token`` grants; the client authenticates
  with client_secret_basic or client_secret_post; ``token_endpoint_status`` fakes an outage.
  RFC 6749 errors: ``invalid_client`` (401), ``invalid_grant`` for a bad, reused or expired
  code and a revoked or expired refresh token.
- ``GET /userinfo`` (Google's shape: ``sub``, ``email``, ``email_verified``) and
  ``GET /v1.0/me`` (Microsoft Graph's: ``id``, ``mail``, ``userPrincipalName``), with the
  access token as ``Authorization: Bearer``; 401 with ``WWW-Authenticate`` otherwise.
- ``POST /introspect`` (RFC 7662: form ``token=``; ``{"active": false}`` for a bad token) and
  ``GET /tokeninfo?access_token=`` (Google's v3 tokeninfo: 400 ``invalid_token``), the two
  ways Dovecot 2.3's ``oauth2`` passdb validates a token (``introspection_mode = post``,
  ``tokeninfo_url``); both carry ``email`` and ``username`` for its ``username_attribute``.

The test API (thread-safe): ``register_client``, ``add_user``, ``issue_tokens`` (a grant as
if the user had consented, for tests that only need a good token), ``revoke_user``,
``expire_access_token``, ``expire_access_tokens``, ``expire_refresh_tokens``,
``token_requests[grant_type]``, ``secrets()`` (every code, token and client secret handed
out, for leak tests) and ``consent(url)`` (follow an authorization URL like the user's
browser would).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.mailservers import HOST, BackgroundServer, closed_port
from tests.support.waiting import wait_until

GOOGLE_SCOPES = frozenset({"https://mail.google.com/", "openid", "email", "profile"})
MICROSOFT_SCOPES = frozenset(
    {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
        "openid",
        "email",
        "profile",
        "User.Read",
    }
)
ALL_SCOPES = GOOGLE_SCOPES | MICROSOFT_SCOPES
CODE_LIFETIME = timedelta(minutes=5)


def _now() -> datetime:
    return datetime.now(UTC)


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge of a code_verifier (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: frozenset[str] = ALL_SCOPES


@dataclass
class OAuthUser:
    email: str
    user_principal_name: str
    subject: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class AccessToken:
    value: str
    email: str
    client_id: str
    scope: str
    expires_at: datetime
    grant: str  # the refresh token (or code) it came from, for revocation

    @property
    def expired(self) -> bool:
        return _now() >= self.expires_at


@dataclass
class RefreshToken:
    value: str
    email: str
    client_id: str
    scope: str
    expires_at: datetime | None = None
    revoked: bool = False

    @property
    def usable(self) -> bool:
        return not self.revoked and (self.expires_at is None or _now() < self.expires_at)


@dataclass
class _Code:
    value: str
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    email: str
    expires_at: datetime
    used: bool = False
    issued: list[str] = field(default_factory=list)  # refresh tokens it produced


@dataclass(frozen=True)
class TokenSet:
    """What a token response holds (also what ``issue_tokens`` hands a test)."""

    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class OAuthProvider(BackgroundServer):
    def __init__(
        self,
        *,
        access_token_lifetime: timedelta = timedelta(hours=1),
        rotate_refresh_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.access_token_lifetime = access_token_lifetime
        # Microsoft rotates refresh tokens on every use; Google keeps the one it gave.
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.refuse_consent = False  # the user clicks "Cancel" on the consent screen
        self.default_user: str | None = None
        self.clients: dict[str, OAuthClient] = {}
        self.users: dict[str, OAuthUser] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.token_requests: Counter[str] = Counter()  # grant_type -> requests, failed too
        self.introspections = 0  # /introspect and /tokeninfo requests
        self.introspected: Counter[str] = Counter()  # the same, by the token asked about
        self.tenants: list[str] = []  # the tenant of each Microsoft-shaped request
        # Set: /token answers this status (503...) with temporarily_unavailable, as an
        # outage would; None: it works.
        self.token_endpoint_status: int | None = None
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                # Microsoft's shape, with the tenant in the path (recorded in ``tenants``).
                Route("/{tenant}/oauth2/v2.0/authorize", self._authorize, methods=["GET"]),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/userinfo", self._userinfo, methods=["GET"]),
                Route("/v1.0/me", self._graph_me, methods=["GET"]),
                Route("/introspect", self._introspect, methods=["POST"]),
                Route("/tokeninfo", self._tokeninfo, methods=["GET"]),
            ]
        )

    # --- URLs -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    def microsoft_authorize_url(self, tenant: str = "common") -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/authorize"

    def microsoft_token_url(self, tenant: str = "common") -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/token"

    @property
    def userinfo_url(self) -> str:
        return f"{self.base_url}/userinfo"

    @property
    def graph_me_url(self) -> str:
        return f"{self.base_url}/v1.0/me"

    @property
    def introspection_url(self) -> str:
        return f"{self.base_url}/introspect"

    @property
    def tokeninfo_url(self) -> str:
        """Ends with ``access_token=``: Dovecot appends the token (``tokeninfo_url``)."""
        return f"{self.base_url}/tokeninfo?access_token="

    # --- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> None:
        self.port = closed_port()
        config = uvicorn.Config(
            self.app, host=HOST, port=self.port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        server, task = self._server, self._task
        await wait_until(lambda: server.started or task.done(), "OAuth provider started", poll=0.01)
        if task.done():
            task.result()  # it failed to start: raise why

    async def _stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    # --- test API -------------------------------------------------------------------------

    def register_client(
        self,
        redirect_uris: list[str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        scopes: frozenset[str] = ALL_SCOPES,
    ) -> OAuthClient:
        client = OAuthClient(
            client_id or f"client-{secrets.token_hex(6)}",
            client_secret or f"cs-{secrets.token_urlsafe(18)}",
            list(redirect_uris),
            scopes,
        )
        with self._lock:
            self.clients[client.client_id] = client
        return client

    def add_user(self, email: str, *, user_principal_name: str | None = None) -> OAuthUser:
        """A user of the provider; the first one added is ``default_user``."""
        user = OAuthUser(email, user_principal_name or email)
        with self._lock:
            self.users[email] = user
            if self.default_user is None:
                self.default_user = email
        return user

    def issue_tokens(
        self, email: str, client_id: str | None = None, scope: str = "https://mail.google.com/"
    ) -> TokenSet:
        """A fresh grant for ``email`` as if it had consented: access and refresh token."""
        if email not in self.users:
            self.add_user(email)
        if client_id is None:
            client_id = next(iter(self.clients), None) or self.register_client([]).client_id
        with self._lock:
            return self._grant(email, client_id, scope)

    def revoke_user(self, email: str) -> None:
        """The user withdrew consent: every refresh and access token of theirs stops working."""
        with self._lock:
            for refresh in self.refresh_tokens.values():
                if refresh.email == email:
                    refresh.revoked = True
            for access in self.access_tokens.values():
                if access.email == email:
                    access.expires_at = _now()

    def expire_access_token(self, token: str) -> None:
        with self._lock:
            self.access_tokens[token].expires_at = _now() - timedelta(seconds=1)

    def expire_access_tokens(self, email: str) -> None:
        """Every access token of the user expires now (their grants stay good)."""
        with self._lock:
            for access in self.access_tokens.values():
                if access.email == email:
                    access.expires_at = _now() - timedelta(seconds=1)

    def expire_refresh_tokens(self, email: str) -> None:
        with self._lock:
            for refresh in self.refresh_tokens.values():
                if refresh.email == email:
                    refresh.expires_at = _now() - timedelta(seconds=1)

    def valid_user(self, token: str) -> str | None:
        """The email a live access token belongs to, or None."""
        with self._lock:
            access = self.access_tokens.get(token)
            return None if access is None or access.expired else access.email

    def secrets(self) -> list[str]:
        """Every code, access token, refresh token and client secret handed out."""
        with self._lock:
            return [
                *self._codes,
                *self.access_tokens,
                *self.refresh_tokens,
                *(c.client_secret for c in self.clients.values()),
            ]

    async def consent(self, authorization_url: str) -> str:
        """What the user's browser does: open the URL, get the redirect; its Location."""
        async with httpx.AsyncClient(follow_redirects=False, timeout=10) as browser:
            response = await browser.get(authorization_url)
        if response.status_code != 302:
            raise AssertionError(f"authorize answered {response.status_code}: {response.text}")
        return response.headers["location"]

    # --- endpoints ------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        self._note_tenant(request)
        query = request.query_params
        client = self.clients.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        if client is None:
            return PlainTextResponse("unknown client_id", status_code=400)
        if redirect_uri not in client.redirect_uris:
            return PlainTextResponse("redirect_uri not registered", status_code=400)
        state = query.get("state")

        def back(**params: str) -> Response:
            if state is not None:
                params["state"] = state
            separator = "&" if urlsplit(redirect_uri).query else "?"
            return RedirectResponse(redirect_uri + separator + urlencode(params), 302)

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        scopes = query.get("scope", "").split()
        if not scopes or not set(scopes) <= client.scopes:
            return back(error="invalid_scope", error_description="scope not allowed")
        if not state:
            return back(error="invalid_request", error_description="state is required")
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or len(challenge) != 43:
            return back(error="invalid_request", error_description="PKCE S256 is required")
        hint = query.get("login_hint")
        email = hint if hint in self.users else self.default_user
        if self.refuse_consent or email is None:
            return back(error="access_denied", error_description="The user refused consent")
        code = _Code(
            f"code.{secrets.token_urlsafe(24)}",
            client.client_id,
            redirect_uri,
            challenge,
            " ".join(scopes),
            email,
            _now() + CODE_LIFETIME,
        )
        with self._lock:
            self._codes[code.value] = code
        return back(code=code.value)

    async def _token(self, request: Request) -> Response:
        self._note_tenant(request)
        fields = await _form(request)
        grant_type = fields.get("grant_type", "")
        with self._lock:
            self.token_requests[grant_type] += 1
        if self.token_endpoint_status is not None:
            outage = {"error": "temporarily_unavailable", "error_description": "try later"}
            return JSONResponse(outage, self.token_endpoint_status)
        try:
            client = self._client_of(request, fields)
            with self._lock:
                if grant_type == "authorization_code":
                    tokens = self._redeem_code(client, fields)
                elif grant_type == "refresh_token":
                    tokens = self._refresh(client, fields)
                else:
                    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}")
        except OAuthError as exc:
            headers = {"WWW-Authenticate": "Basic"} if exc.status == 401 else None
            error = {"error": exc.error, "error_description": exc.description}
            return JSONResponse(error, exc.status, headers=headers)
        body: dict[str, Any] = {
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "scope": tokens.scope,
        }
        if tokens.refresh_token is not None:
            body["refresh_token"] = tokens.refresh_token
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _note_tenant(self, request: Request) -> None:
        tenant = request.path_params.get("tenant")
        if tenant is not None:
            with self._lock:
                self.tenants.append(tenant)

    def _client_of(self, request: Request, fields: dict[str, str]) -> OAuthClient:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):  # client_secret_basic (RFC 6749 2.3.1)
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            raw_id, _, raw_secret = decoded.partition(":")
            client_id, secret = unquote(raw_id), unquote(raw_secret)
        else:  # client_secret_post
            client_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    def _redeem_code(self, client: OAuthClient, fields: dict[str, str]) -> TokenSet:
        code = self._codes.get(fields.get("code", ""))
        if code is None or code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown authorization code")
        if code.used:  # RFC 6749 4.1.2: a second use revokes what the first issued
            for value in code.issued:
                self.refresh_tokens[value].revoked = True
            for access in self.access_tokens.values():
                if access.grant in code.issued:
                    access.expires_at = _now()
            raise OAuthError("invalid_grant", "authorization code already used")
        code.used = True
        if _now() >= code.expires_at:
            raise OAuthError("invalid_grant", "authorization code expired")
        if fields.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = fields.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or pkce_challenge(verifier) != code.challenge:
            raise OAuthError("invalid_grant", "PKCE verification failed")
        tokens = self._grant(code.email, client.client_id, code.scope)
        assert tokens.refresh_token is not None
        code.issued.append(tokens.refresh_token)
        return tokens

    def _refresh(self, client: OAuthClient, fields: dict[str, str]) -> TokenSet:
        refresh = self.refresh_tokens.get(fields.get("refresh_token", ""))
        if refresh is None or refresh.client_id != client.client_id or not refresh.usable:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        if self.rotate_refresh_tokens:
            refresh.revoked = True
            return self._grant(refresh.email, client.client_id, refresh.scope)
        access = self._access(refresh.email, client.client_id, refresh.scope, refresh.value)
        return TokenSet(access.value, None, self._lifetime(), refresh.scope)

    def _grant(self, email: str, client_id: str, scope: str) -> TokenSet:
        refresh = RefreshToken(f"rt.{secrets.token_urlsafe(32)}", email, client_id, scope)
        self.refresh_tokens[refresh.value] = refresh
        access = self._access(email, client_id, scope, refresh.value)
        return TokenSet(access.value, refresh.value, self._lifetime(), scope)

    def _access(self, email: str, client_id: str, scope: str, grant: str) -> AccessToken:
        lifetime = self.access_token_lifetime
        value = f"at.{secrets.token_urlsafe(32)}"
        access = AccessToken(value, email, client_id, scope, _now() + lifetime, grant)
        self.access_tokens[value] = access
        return access

    def _lifetime(self) -> int:
        return int(self.access_token_lifetime.total_seconds())

    def _bearer_user(self, request: Request) -> OAuthUser | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        email = self.valid_user(header[7:].strip())
        return self.users.get(email) if email else None

    async def _userinfo(self, request: Request) -> Response:
        user = self._bearer_user(request)
        if user is None:
            return _unauthorized()
        return JSONResponse({"sub": user.subject, "email": user.email, "email_verified": True})

    async def _graph_me(self, request: Request) -> Response:
        user = self._bearer_user(request)
        if user is None:
            return _unauthorized()
        return JSONResponse(
            {
                "id": user.subject,
                "mail": user.email,
                "userPrincipalName": user.user_principal_name,
                "displayName": user.email.split("@")[0],
            }
        )

    def _describe(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            self.introspections += 1
            self.introspected[token] += 1
            access = self.access_tokens.get(token)
            if access is None or access.expired:
                return None
            left = int((access.expires_at - _now()).total_seconds())
            return {
                "email": access.email,
                "username": access.email,
                "scope": access.scope,
                "client_id": access.client_id,
                "aud": access.client_id,
                "sub": self.users[access.email].subject,
                "exp": int(access.expires_at.timestamp()),
                "expires_in": max(left, 1),
            }

    async def _introspect(self, request: Request) -> Response:
        facts = self._describe((await _form(request)).get("token", ""))
        if facts is None:
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "token_type": "Bearer", **facts})

    async def _tokeninfo(self, request: Request) -> Response:
        facts = self._describe(request.query_params.get("access_token", ""))
        if facts is None:
            return JSONResponse(
                {"error": "invalid_token", "error_description": "Invalid Value"}, 400
            )
        return JSONResponse({**facts, "expires_in": str(facts["expires_in"])})


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (python-multipart is not a dependency)."""
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is invalid"}},
        401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
