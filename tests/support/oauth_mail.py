"""An aiosmtpd that logs users in with OAuth access tokens, checked against the test provider.

``OAuthSmtpServer(mode, provider, ssl_context=...)`` is a ``SmtpServer`` whose AUTH offers
XOAUTH2 and OAUTHBEARER (``mechanisms`` picks which; PLAIN and LOGIN with ``users`` too when
named). Each token is validated over HTTP at the provider's RFC 7662 introspection endpoint,
as a real server asks its identity provider, and must belong to the user it is sent for.

A refused token gets what Gmail sends: a 334 challenge holding a base64 JSON error, then,
after the client's answer (recorded in ``acks``: XOAUTH2 wants an empty line, OAUTHBEARER a
single %x01), 535. aiosmtpd sends that 535 itself when an ``auth_*`` method returns
``AuthResult(success=False, handled=False)``; ``handled=True`` would send nothing at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Iterable, Mapping

import httpx
from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from tests.support.mailservers import SmtpHandler, SmtpMode, SmtpServer
from tests.support.oauth_provider import OAuthProvider

OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")


class OAuthSmtpServer(SmtpServer):
    def __init__(
        self,
        mode: SmtpMode,
        provider: OAuthProvider,
        *,
        ssl_context: ssl.SSLContext | None = None,
        mechanisms: Iterable[str] = OAUTH_MECHANISMS,
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(mode, users or {}, ssl_context=ssl_context)
        self.provider = provider
        offered = {m.upper() for m in mechanisms}
        self.excluded_mechanisms = [
            m for m in (*OAUTH_MECHANISMS, *PASSWORD_MECHANISMS) if m not in offered
        ]
        self.oauth_attempts: list[str] = []  # the mechanism of each OAuth login attempt
        self.acks: list[bytes] = []  # the client's answers to error challenges, decoded

    def handler(self) -> SmtpHandler:
        return _OAuthHandler(self)

    async def token_owner(self, token: str) -> str | None:
        """Who the provider says the token belongs to (None: not a live token)."""
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(self.provider.introspection_url, data={"token": token})
        facts = reply.json()
        return facts.get("email") if facts.get("active") is True else None


class _OAuthHandler(SmtpHandler):
    def __init__(self, server: OAuthSmtpServer) -> None:
        super().__init__(server)
        self._oauth = server

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        return await self._login(smtp, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, smtp: SMTP, args: list[str]) -> AuthResult:
        return await self._login(smtp, args, "OAUTHBEARER")

    async def _login(self, smtp: SMTP, args: list[str], mechanism: str) -> AuthResult:
        server = self._oauth
        server.auth_attempts += 1
        server.oauth_attempts.append(mechanism)
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await smtp.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await smtp.challenge_auth("")
            if answer is MISSING:  # aborted: aiosmtpd already answered 501
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            blob = answer
        user, token = parse_oauth_response(mechanism, blob)
        if user and token and (await server.token_owner(token) or "").lower() == user.lower():
            return AuthResult(success=True, auth_data=user)
        error = {"status": "401" if mechanism == "XOAUTH2" else "invalid_token"}
        error |= {"schemes": "Bearer", "scope": "https://mail.google.com/"}
        ack = await smtp.challenge_auth(json.dumps(error))
        if ack is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(ack, bytes)
        server.acks.append(ack)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


def parse_oauth_response(mechanism: str, blob: bytes) -> tuple[str | None, str | None]:
    """(user, token) from an XOAUTH2 or OAUTHBEARER client response; None where malformed."""
    text = blob.decode("utf-8", "replace")
    if mechanism == "OAUTHBEARER":
        header, _, rest = text.partition("\x01")
        parts = header.split(",")
        authzid = next((p[2:] for p in parts if p.startswith("a=")), None)
        user = authzid.replace("=2C", ",").replace("=3D", "=") if authzid else None
        fields = dict(kv.partition("=")[::2] for kv in rest.split("\x01") if kv)
    else:
        fields = dict(kv.partition("=")[::2] for kv in text.split("\x01") if kv)
        user = fields.get("user")
    auth = fields.get("auth", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else None
    return user, token
