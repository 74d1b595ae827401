"""Mail servers that log users in with OAuth access tokens, checked against the test provider.

``OAuthSmtpServer(mode, provider, ssl_context=...)`` is a ``SmtpServer`` whose AUTH offers
XOAUTH2 and OAUTHBEARER (``mechanisms`` picks which; PLAIN and LOGIN with ``users`` too when
named). Each token is validated over HTTP at the provider's RFC 7662 introspection endpoint,
as a real server asks its identity provider, and must belong to the user it is sent for.

A refused token gets what Gmail sends: a 334 challenge holding a base64 JSON error, then,
after the client's answer (recorded in ``acks``: XOAUTH2 wants an empty line, OAUTHBEARER a
single %x01), 535. aiosmtpd sends that 535 itself when an ``auth_*`` method returns
``AuthResult(success=False, handled=False)``; ``handled=True`` would send nothing at all.

``OAuthImapServer(provider, mechanisms=..., sasl_ir=...)`` is a small IMAP server for the
shapes Dovecot does not take: OAUTHBEARER only, or no SASL-IR (the client's response must
wait for the server's "+"). It knows CAPABILITY, AUTHENTICATE, EXAMINE/SELECT (an empty
INBOX), NOOP and LOGOUT, and answers a refused token the same way (challenge, then NO).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
from collections.abc import Iterable, Mapping

import httpx
from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from tests.support.mailservers import SmtpHandler, SmtpMode, SmtpServer, StreamServer
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
        return await token_owner(self.provider, token)


async def token_owner(provider: OAuthProvider, token: str) -> str | None:
    """Who the provider says the token belongs to (None: not a live token), asked over HTTP."""
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(provider.introspection_url, data={"token": token})
    facts = reply.json()
    return facts.get("email") if facts.get("active") is True else None


def error_challenge(mechanism: str) -> bytes:
    """The JSON error a refused token gets, as Gmail (XOAUTH2) and RFC 7628 word it."""
    error = {"status": "401" if mechanism == "XOAUTH2" else "invalid_token"}
    error |= {"schemes": "Bearer", "scope": "https://mail.google.com/"}
    return json.dumps(error).encode()


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
        ack = await smtp.challenge_auth(error_challenge(mechanism))
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


class OAuthImapServer(StreamServer):
    def __init__(
        self,
        provider: OAuthProvider,
        *,
        mechanisms: Iterable[str] = OAUTH_MECHANISMS,
        sasl_ir: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context)
        self.provider = provider
        self.mechanisms = [m.upper() for m in mechanisms]
        self.sasl_ir = sasl_ir
        self.received: list[bytes] = []  # every line a client sent
        self.oauth_attempts: list[str] = []
        self.acks: list[bytes] = []

    @property
    def capability(self) -> bytes:
        words = ["IMAP4rev1", *(f"AUTH={m}" for m in self.mechanisms)]
        if self.sasl_ir:
            words.append("SASL-IR")
        return " ".join(words).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY " + self.capability + b"] ready\r\n")
        await writer.drain()
        user: str | None = None
        while line := await reader.readline():
            self.received.append(line)
            tag, _, rest = line.strip().partition(b" ")
            words = rest.split(b" ")
            command = words[0].upper()
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + self.capability + b"\r\n" + tag + b" OK\r\n")
            elif command == b"AUTHENTICATE" and user is None:
                user = await self._authenticate(reader, writer, tag, words[1:])
            elif command in (b"EXAMINE", b"SELECT") and user is not None:
                writer.write(
                    b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n"
                    + tag
                    + b" OK [READ-ONLY] done\r\n"
                )
            elif command == b"NOOP":
                writer.write(tag + b" OK\r\n")
            elif command == b"LOGOUT":
                writer.write(b"* BYE\r\n" + tag + b" OK\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" BAD not here\r\n")
            await writer.drain()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tag: bytes,
        args: list[bytes],
    ) -> str | None:
        mechanism = args[0].decode().upper() if args else ""
        if mechanism not in self.mechanisms:
            writer.write(tag + b" NO unsupported mechanism\r\n")
            return None
        self.oauth_attempts.append(mechanism)
        if len(args) > 1 and self.sasl_ir:
            response = args[1]
        elif len(args) > 1:
            writer.write(tag + b" BAD no SASL-IR here\r\n")
            return None
        else:
            writer.write(b"+ \r\n")
            await writer.drain()
            response = (await reader.readline()).strip()
        try:
            user, token = parse_oauth_response(mechanism, base64.b64decode(response))
        except binascii.Error:
            writer.write(tag + b" BAD not base64\r\n")
            return None
        if user and token and (await token_owner(self.provider, token) or "").lower() == user:
            writer.write(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
            return user
        writer.write(b"+ " + base64.b64encode(error_challenge(mechanism)) + b"\r\n")
        await writer.drain()
        ack = (await reader.readline()).strip()
        self.acks.append(base64.b64decode(ack))
        writer.write(tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        return None
