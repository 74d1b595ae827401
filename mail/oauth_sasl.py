"""SASL for OAuth access tokens: XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).

Used when ``Endpoint.login is Login.OAUTH2`` by every place that logs in: the SMTP session
(``mail.smtp_probe``: probe, test email, sending) and the IMAP sessions (``mail.imap_probe``
on the raw wire, ``mail.imap_auth`` on aioimaplib). Rules they share:

- XOAUTH2 when the server offers it, else OAUTHBEARER; a server offering neither is an
  error, never a reason to try a password mechanism with the token.
- A refused token ends in ``ProbeCode.TOKEN_REJECTED``. Both mechanisms answer a refusal
  with a challenge carrying a JSON error; the client answers it as each specification says
  (XOAUTH2: an empty response; OAUTHBEARER: a single %x01, RFC 7628 section 3.2.3) so the
  server can end the exchange with its final refusal instead of waiting for a timeout.
- No text built here holds the token, and ``token_forms`` lists what the probes' scrubbing
  must remove from anything a server echoes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

from aiosmtplib.auth import auth_xoauth2_encode

from mail.endpoint import Endpoint
from mail.failures import ProbeFailure
from mail.results import ProbeCode

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"
# What a client sends after the server's error challenge, base64 (the SASL wire form).
ERROR_ACK = {XOAUTH2: b"", OAUTHBEARER: base64.b64encode(b"\x01")}

_STATUS = re.compile(r"[0-9]{3}|[a-z_]{1,30}")
TOKEN_REJECTED_HINT = (
    "The access token was refused: it expired or the account's consent was withdrawn. inboxd "
    "refreshes the token once and tries again; if it is still refused, connect the account "
    "again."
)


def pick_mechanism(offered: Sequence[str]) -> str | None:
    """XOAUTH2 if the server offers it, else OAUTHBEARER, else None."""
    names = {name.upper() for name in offered}
    return next((m for m in (XOAUTH2, OAUTHBEARER) if m in names), None)


def initial_response(mechanism: str, endpoint: Endpoint, token: str) -> bytes:
    """The base64 client response that carries the token."""
    if mechanism == XOAUTH2:
        return auth_xoauth2_encode(endpoint.username, token)
    # RFC 7628 section 3.1: gs2 header with the authzid, then host, port and the bearer token.
    text = (
        f"n,a={_saslname(endpoint.username)},\x01host={endpoint.host}\x01port={endpoint.port}"
        f"\x01auth=Bearer {token}\x01\x01"
    )
    return base64.b64encode(text.encode("utf-8"))


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def token_forms(endpoint: Endpoint, token: str) -> list[str]:
    """The token as it travels (plain, and inside each mechanism's base64), for scrubbing."""
    return [
        token,
        base64.b64encode(token.encode("utf-8", "surrogateescape")).decode(),
        *(initial_response(m, endpoint, token).decode() for m in (XOAUTH2, OAUTHBEARER)),
    ]


def error_status(challenge: bytes | str, token: str) -> str | None:
    """The ``status`` of a server's JSON error challenge ("401", "invalid_token"): a number or
    a lowercase word, and never anything of the token a server might have echoed into it."""
    try:
        raw = base64.b64decode(challenge.strip(), validate=True)
        status = json.loads(raw.decode("utf-8")).get("status")
    except (binascii.Error, ValueError, AttributeError):
        return None
    text = str(status)
    if not _STATUS.fullmatch(text) or (not text.isdigit() and text in token):
        return None
    return text


def token_rejected(reply: str, status: str | None = None) -> ProbeFailure:
    """The server refused the token; ``reply`` is its final answer, already scrubbed."""
    detail = f", status {status}" if status else ""
    return ProbeFailure(
        ProbeCode.TOKEN_REJECTED,
        f"The server refused the OAuth access token ({reply}{detail}).",
        hint=TOKEN_REJECTED_HINT,
    )


def no_oauth_mechanism(offered: Sequence[str], *, plaintext: bool) -> ProbeFailure:
    """Neither XOAUTH2 nor OAUTHBEARER is offered; ``plaintext``: on a plaintext connection
    whose server offers STARTTLS (servers list OAuth mechanisms only under TLS)."""
    if plaintext:
        return ProbeFailure(
            ProbeCode.PLAINTEXT_AUTH_REFUSED,
            "The server offers no OAuth login over an unencrypted connection.",
            hint="Set security to STARTTLS: the server offers it.",
            field="security",
        )
    return ProbeFailure(
        ProbeCode.PROTOCOL_ERROR,
        "The server offers no OAuth login (XOAUTH2 or OAUTHBEARER) "
        f"(offered: {', '.join(offered) or 'none'}).",
        hint="This server takes passwords: connect the inbox with a password instead of OAuth.",
    )
