"""Logging an aioimaplib session in (``mail.imap_session``): LOGIN with the password, or
AUTHENTICATE XOAUTH2 / OAUTHBEARER with an OAuth access token (``mail.oauth_sasl``).

Not aioimaplib's ``xoauth2``: it sends the initial response only inline (a server without
SASL-IR gets nothing after its "+"), leaves the server's error challenge unanswered (the
server then waits, and so does the session, until its timeout) and scrubs only the plain
token from its debug log while the line it sends holds the token in base64.

aioimaplib logs what it receives (at DEBUG; lines it cannot place, at INFO), and a server
may echo the credential it was sent: while a session logs in, its credential's forms are
blanked in aioimaplib's log records. Only during the login, so the filter's work stays
bounded by the logins under way, not by every session open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import aioimaplib

from mail.endpoint import Endpoint, Login
from mail.imap_mailbox import ImapSessionError
from mail.oauth_sasl import (
    ERROR_ACK,
    TOKEN_REJECTED_HINT,
    error_status,
    initial_response,
    pick_mechanism,
)
from mail.probe_runner import secret_forms
from mail.results import ProbeCode

_PASSWORD_HINT = (
    "Check the username (often the full email address) and the password; providers with 2FA "
    "need an app password."
)


class _Scrub(logging.Filter):
    """Blanks the credentials of the logins under way in aioimaplib's log records."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[int, tuple[str, ...]] = {}  # id(client) -> its credential's forms

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.forms:
            return True
        text = original = record.getMessage()
        for forms in list(self.forms.values()):
            for form in forms:
                text = text.replace(form, "***")
        if text != original:
            record.msg, record.args = text, None
        return True


_SCRUB = _Scrub()
logging.getLogger("aioimaplib.aioimaplib").addFilter(_SCRUB)
_MIN_SCRUBBED = 3  # as in server texts (mail.probe_runner): "a" is not blanked everywhere


@contextlib.contextmanager
def _scrubbed(client: object, endpoint: Endpoint) -> Iterator[None]:
    forms = tuple(f for f in secret_forms(endpoint) if len(f) >= _MIN_SCRUBBED)
    _SCRUB.forms[id(client)] = forms
    try:
        yield
    finally:
        _SCRUB.forms.pop(id(client), None)


@dataclass(slots=True)
class SaslExchange:
    """The client side of one AUTHENTICATE: what to send at each "+" from the server."""

    pending: list[bytes]  # the initial response, when not sent inline (no SASL-IR)
    error_ack: bytes
    challenge: bytes | None = field(default=None)  # the server's error challenge, if any

    def answer(self, line: bytes) -> bytes:
        if self.pending:
            return self.pending.pop()
        if self.challenge is None:
            self.challenge = line[1:].strip()
            return self.error_ack
        return b"*"  # a second challenge: cancel (RFC 3501 section 6.2.2)


async def log_in(client: aioimaplib.IMAP4, endpoint: Endpoint) -> None:
    """Log ``client`` in as ``endpoint`` says. Raises ImapSessionError (``auth`` set) when the
    server refuses the credentials."""
    with _scrubbed(client, endpoint):
        if endpoint.login is Login.OAUTH2:
            await _oauth(client, endpoint)
            return
        response = await client.login(endpoint.username, endpoint.password.reveal())
    if response.result != "OK":
        raise ImapSessionError(
            ProbeCode.AUTH_FAILED.value,
            "The server rejected the IMAP username or password.",
            hint=_PASSWORD_HINT,
            auth=True,
        )


async def _oauth(client: aioimaplib.IMAP4, endpoint: Endpoint) -> None:
    protocol = client.protocol
    capabilities = {c.upper() for c in protocol.capabilities}
    offered = [c[len("AUTH=") :] for c in capabilities if c.startswith("AUTH=")]
    mechanism = pick_mechanism(offered)
    if mechanism is None:
        raise ImapSessionError(
            ProbeCode.PROTOCOL_ERROR.value,
            "The IMAP server offers no OAuth login (XOAUTH2 or OAUTHBEARER).",
            hint="This server takes passwords: connect the inbox with a password instead.",
        )
    token = endpoint.password.reveal()
    response = initial_response(mechanism, endpoint, token)
    sasl_ir = "SASL-IR" in capabilities
    exchange = SaslExchange([] if sasl_ir else [response], ERROR_ACK[mechanism])
    args = (mechanism, response.decode("ascii")) if sasl_ir else (mechanism,)
    command = aioimaplib.Command("AUTHENTICATE", protocol.new_tag(), *args, loop=protocol.loop)
    protocol.sasl = exchange  # the protocol answers the server's "+" from it
    try:
        async with asyncio.timeout(client.timeout), protocol.state_condition:
            # scrub: aioimaplib's debug log of the line sent shows stars instead.
            result = await protocol.execute(command, scrub=response.decode("ascii"))
            if result.result == "OK":
                protocol.state = aioimaplib.AUTH
            protocol.state_condition.notify_all()
    finally:
        protocol.sasl = None
    if result.result != "OK":
        status = error_status(exchange.challenge, token) if exchange.challenge else None
        detail = f" (status {status})" if status else ""
        raise ImapSessionError(
            ProbeCode.TOKEN_REJECTED.value,
            f"The IMAP server refused the OAuth access token{detail}.",
            hint=TOKEN_REJECTED_HINT,
            auth=True,
        )
