"""Messages this process has just stored, kept a moment for its own ``messageReceived``
subscribers: the store's statement returns the stored row (``storage.messages.store_message``),
so every subscriber of the inbox in this process renders the message from that one row instead
of reading it back once each.

A row here is the message as received. It serves only the MESSAGE_RECEIVED event of that
message, and only to a subscriber of the row's workspace; anything else (``message(id)``,
lists) reads Postgres, where a message changed or deleted since is as it is now. A message
stored by another process is not here: its subscribers read it, as before. A process with no
subscriber of the workspace (``inboxd worker``) keeps nothing (``Receiver._store``).

An entry is made before the statement runs, with the message's id (chosen by the caller), so
the event, which Postgres delivers at commit, can never outrun it: a subscriber that finds the
entry still pending waits for the statement's answer, which is already on its way. Entries
are bounded by count and by the size of the messages they hold; the oldest go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from storage.messages import MessageRow

MAX_ENTRIES = 256
MAX_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class _Entry:
    workspace_id: uuid.UUID
    row: asyncio.Future[MessageRow | None]
    weight: int = field(default=0)  # counted in the budget once the row is known


def weight(row: MessageRow) -> int:
    """Bytes a kept row is charged: its bodies, or the raw message's size if larger."""
    return max(row.size, len(row.text_body or "") + len(row.html_body or ""))


class RecentlyStored:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    @contextlib.contextmanager
    def storing(
        self, message_id: uuid.UUID, workspace_id: uuid.UUID
    ) -> Iterator[asyncio.Future[MessageRow | None]]:
        """Around the statement that stores ``message_id``: set the future's result to the
        stored row (None: nothing stored). Left unset (an error, a cancellation), it is None."""
        entry = _Entry(workspace_id, asyncio.get_running_loop().create_future())
        self._entries[message_id] = entry
        self._evict()
        try:
            yield entry.row
        finally:
            if not entry.row.done():
                entry.row.set_result(None)
            self._settled(message_id, entry)

    def _settled(self, message_id: uuid.UUID, entry: _Entry) -> None:
        if self._entries.get(message_id) is not entry:
            return  # already evicted
        row = entry.row.result()
        if row is None:
            del self._entries[message_id]
            return
        entry.weight = weight(row)
        if entry.weight > self.max_bytes:
            del self._entries[message_id]  # too big to keep: not worth the others
            return
        self._bytes += entry.weight
        self._evict()

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.weight

    async def received(self, message_id: uuid.UUID, workspace_id: uuid.UUID) -> MessageRow | None:
        """The row this process stored as ``message_id``, for the MESSAGE_RECEIVED event of
        that message in ``workspace_id``; None when not here (read it instead)."""
        entry = self._entries.get(message_id)
        if entry is None or entry.workspace_id != workspace_id:
            return None
        # Shielded: a subscriber that leaves while waiting must not cancel the others' row.
        row = await asyncio.shield(entry.row)
        if row is None or row.workspace_id != workspace_id:
            return None
        return row
