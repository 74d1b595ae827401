"""Attachment bytes, and the short-lived signed links that hand them out.

A link is a capability: whoever holds it may download the one attachment it names until it
expires, with no API key. Its signature is HMAC-SHA256 over the message id, the attachment's
index, the expiry and the message's workspace, under a key derived from the key ring (HKDF)
for this use only, never an encryption key; a link signed before a key rotation still verifies
while its key is in the ring. The workspace travels in the link so that a link is checked
before the database is asked anything, and the read is scoped to that workspace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from storage.db import Connection
from storage.secrets import KeyRing

PURPOSE = "attachment-links:v1"


class LinkCheck(Enum):
    VALID = "valid"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class LinkTarget:
    workspace_id: uuid.UUID
    message_id: uuid.UUID
    index: int


def _payload(target: LinkTarget, expires: int) -> bytes:
    return f"{target.message_id}\n{target.index}\n{expires}\n{target.workspace_id}".encode()


class AttachmentLinks:
    """Signs and checks attachment links; its keys never show (``repr`` names the lifetime)."""

    __slots__ = ("_keys", "lifetime_seconds")

    def __init__(self, keyring: KeyRing, lifetime_seconds: int) -> None:
        self._keys = keyring.derive(PURPOSE)
        self.lifetime_seconds = lifetime_seconds

    def __repr__(self) -> str:
        return f"AttachmentLinks(lifetime_seconds={self.lifetime_seconds})"

    def _sign(self, key: bytes, target: LinkTarget, expires: int) -> str:
        digest = hmac.new(key, _payload(target, expires), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, target: LinkTarget, now: float | None = None) -> str:
        """The path (relative to the API's base URL) that serves ``target`` until it expires."""
        expires = int(now if now is not None else time.time()) + self.lifetime_seconds
        query = urlencode(
            {
                "workspace": str(target.workspace_id),
                "expires": expires,
                "sig": self._sign(self._keys[0], target, expires),
            }
        )
        return f"/attachments/{target.message_id}/{target.index}?{query}"

    def check(
        self, target: LinkTarget, expires: int, sig: str, now: float | None = None
    ) -> LinkCheck:
        given = sig.encode("ascii", "replace")
        # Every key is compared, in constant time each, whichever matches.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(self._sign(key, target, expires).encode(), given)
        if not matched:
            return LinkCheck.BAD_SIGNATURE
        if (now if now is not None else time.time()) > expires:
            return LinkCheck.EXPIRED
        return LinkCheck.VALID


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    filename: str | None
    content_type: str
    content: bytes


READ_SQL = """
    SELECT m.attachments -> $3::int AS described, a.content
      FROM message m JOIN message_attachment a ON a.message_id = m.id AND a.index = $3::int
     WHERE m.id = $1 AND m.workspace_id = $2
"""


async def read_attachment(connection: Connection, target: LinkTarget) -> AttachmentFile | None:
    """The attachment's bytes and description; None when the message, or its bytes, are gone."""
    record = await connection.fetchrow(
        READ_SQL, target.message_id, target.workspace_id, target.index
    )
    if record is None:
        return None
    described: dict[str, Any] = record["described"] or {}
    return AttachmentFile(
        filename=described.get("filename"),
        content_type=described.get("content_type") or "application/octet-stream",
        content=record["content"],
    )
