"""Fetching messages for the receiver's session (``mail.imap_session``): mixed into
``ImapSession``, whose aioimaplib client is ``_client``.

A message shorter than WHOLE_BELOW comes whole in the round trip that asks for its size and
flags (``BODY.PEEK[]<0.WHOLE_BELOW>``: the first bytes, all of them for most mail); a longer
one is fetched again, whole, or only its header past ``max_message_bytes``. UID FETCH goes in
batches: aioimaplib recurses once per response line and overflows the stack on one large
FETCH. BODY.PEEK never marks a message seen.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mail.imap_mailbox import ImapSessionError, flags_of

_FETCH_START = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
# A message shorter than this is fetched whole in the round trip that asks for its size.
WHOLE_BELOW = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    size: int
    raw: bytes
    headers_only: bool  # larger than max_message_bytes: only its header was fetched
    flags: frozenset[str] = frozenset()  # lowercased, as they were before the fetch


class MessageFetches:
    """Mixed into ``ImapSession``: its aioimaplib client is ``_client``."""

    _client: Any
    _settings: Any

    async def fetch_items(
        self, uids: list[int] | str, items: str
    ) -> list[tuple[bytes, bytes | None]]:
        """(the FETCH response's text, its literal) per message; ``uids`` a list or a UID set
        ("5:24")."""
        uid_set = uids if isinstance(uids, str) else ",".join(map(str, uids))
        response = await self._client.uid("fetch", uid_set, items)
        if response.result != "OK":
            raise ImapSessionError("PROTOCOL_ERROR", "The server refused UID FETCH.")
        found: list[tuple[bytes, bytes | None]] = []
        for line in response.lines:
            if isinstance(line, bytearray):  # the literal of the message before
                if found:
                    found[-1] = (found[-1][0], bytes(line))
            elif _FETCH_START.match(line):
                found.append((bytes(line), None))
            elif found:  # the rest of the FETCH, after its literal
                found[-1] = (found[-1][0] + b" " + bytes(line), found[-1][1])
        return found

    async def fetch(self, uids: list[int]) -> AsyncIterator[Fetched]:
        """Each message of ``uids`` in UID order, batch by batch; never marks one seen."""
        batch = self._settings.fetch_batch
        for start in range(0, len(uids), batch):
            for fetched in await self._fetch_set(",".join(map(str, uids[start : start + batch]))):
                yield fetched

    async def fetch_range(self, first: int, last: int) -> list[Fetched]:
        """The messages of the selected folder whose UIDs are ``first`` to ``last``, in UID
        order (none when there are none: a range without ``*`` matches only what it says)."""
        return [f for f in await self._fetch_set(f"{first}:{last}") if first <= f.uid <= last]

    async def _fetch_set(self, uid_set: str) -> list[Fetched]:
        """The messages of ``uid_set``: each one's size, flags and first WHOLE_BELOW bytes in
        one round trip, which is the whole of most messages; a larger one is fetched again,
        whole, or its header alone past ``max_message_bytes``."""
        limit = self._settings.max_message_bytes
        sizes: dict[int, int] = {}
        flags: dict[int, frozenset[str]] = {}
        bodies: dict[int, tuple[bytes, bool]] = {}
        items = f"(UID RFC822.SIZE FLAGS BODY.PEEK[]<0.{WHOLE_BELOW}>)"
        for text, literal in await self.fetch_items(uid_set, items):
            uid, size = UID.search(text), _SIZE.search(text)
            if uid and size:
                number = int(uid.group(1))
                sizes[number] = int(size.group(1))
                flags[number] = flags_of(text)
                # Shorter than asked: the server sent all there is. (RFC822.SIZE is not
                # compared: some servers report it only approximately.)
                if literal is not None and len(literal) < WHOLE_BELOW and sizes[number] <= limit:
                    bodies[number] = (literal, False)
        rest = [u for u in sorted(sizes) if u not in bodies]
        small = [u for u in rest if sizes[u] <= limit]
        large = [u for u in rest if sizes[u] > limit]
        for chosen, items, headers_only in (
            (small, "(UID BODY.PEEK[])", False),
            (large, "(UID BODY.PEEK[HEADER])", True),
        ):
            if not chosen:
                continue
            for text, literal in await self.fetch_items(chosen, items):
                uid = UID.search(text)
                if uid and literal is not None:
                    bodies[int(uid.group(1))] = (literal, headers_only)
        return [
            Fetched(number, sizes[number], raw, headers_only, flags[number])
            for number, (raw, headers_only) in sorted(bodies.items())
        ]
