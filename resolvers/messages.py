"""What the received-mail fields do: pages of an inbox's messages, one message, and the
receiving status of inboxes (batched per request). Every read is scoped to the caller's
workspace: another workspace's inbox or message reads as absent."""

from __future__ import annotations

import uuid

from strawberry.dataloader import DataLoader

from resolvers.pagination import check_first, decode_cursor
from resolvers.state import AppState
from storage import messages, watch_leases
from storage.api_keys import Principal
from storage.messages import MessageFilter, MessageRow
from storage.watch_leases import WatchStatus


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


async def list_messages(
    state: AppState,
    principal: Principal,
    raw_inbox_id: str,
    *,
    first: int,
    after: str | None,
    flt: MessageFilter,
) -> tuple[list[MessageRow], bool]:
    """A page of the inbox's messages, newest first (none for an inbox the caller cannot see)."""
    check_first(first, state.max_page_size)
    cursor = decode_cursor(after)
    inbox_id = _uuid(raw_inbox_id)
    if inbox_id is None:
        return [], False
    async with state.db.connection() as connection:
        return await messages.read_messages(
            connection, principal.workspace_id, inbox_id, first=first, after=cursor, flt=flt
        )


async def get_message(state: AppState, principal: Principal, raw_id: str) -> MessageRow | None:
    message_id = _uuid(raw_id)
    if message_id is None:
        return None
    async with state.db.connection() as connection:
        return await messages.read_message(connection, principal.workspace_id, message_id)


def watch_status_loader(state: AppState) -> DataLoader[uuid.UUID, WatchStatus | None]:
    """Per-request batching of ``EmailInbox.receiving``: one query for a list of inboxes (the
    inboxes were read for the caller's workspace already)."""

    async def load(keys: list[uuid.UUID]) -> list[WatchStatus | None]:
        async with state.db.connection() as connection:
            found = await watch_leases.read_statuses(connection, list(keys))
        return [found.get(key) for key in keys]

    return DataLoader(load_fn=load)
