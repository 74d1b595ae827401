"""What the received-mail fields do: pages of an inbox's messages, one message, the receiving
status of inboxes (batched per request), and setting a message's flags or deleting it (each
audited, and carried to the IMAP server by the inbox's watcher: ``inboxd.message_actions``).
Everything is scoped to the caller's workspace: another workspace's inbox or message reads as
absent, and changing it is NOT_FOUND."""

from __future__ import annotations

import uuid
from typing import Any

from strawberry.dataloader import DataLoader

from resolvers.pagination import check_first, decode_cursor
from resolvers.state import AppState
from resolvers.validation import FieldIssue, InputInvalid, parse_id
from resolvers.validation_issues import id_or_none
from storage import audit, message_changes, messages, watch_leases
from storage.api_keys import Principal
from storage.db import Connection
from storage.errors import NotFoundError
from storage.messages import MessageFilter, MessageRow
from storage.watch_leases import WatchStatus


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
    inbox_id = id_or_none(raw_inbox_id)
    if inbox_id is None:
        return [], False
    async with state.db.connection() as connection:
        return await messages.read_messages(
            connection, principal.workspace_id, inbox_id, first=first, after=cursor, flt=flt
        )


async def get_message(state: AppState, principal: Principal, raw_id: str) -> MessageRow | None:
    message_id = id_or_none(raw_id)
    if message_id is None:
        return None
    async with state.db.connection() as connection:
        return await messages.read_message(connection, principal.workspace_id, message_id)


async def set_message_flags(
    state: AppState,
    principal: Principal,
    raw_id: str,
    *,
    seen: bool | None,
    flagged: bool | None,
    client_address: str | None = None,
) -> MessageRow:
    message_id = parse_id(raw_id)
    if seen is None and flagged is None:
        raise InputInvalid([FieldIssue("seen", "give seen, flagged or both")])
    async with state.db.connection() as connection, connection.transaction():
        row = await message_changes.set_flags(
            connection, principal.workspace_id, message_id, seen=seen, flagged=flagged
        )
        if row is None:
            raise NotFoundError("message", raw_id)
        details = {"messageId": str(message_id), "seen": seen, "flagged": flagged}
        await _audit(
            connection, principal, "MESSAGE_FLAGS_SET", row.inbox_id, client_address, details
        )
    return row


async def delete_message(
    state: AppState, principal: Principal, raw_id: str, *, client_address: str | None = None
) -> uuid.UUID:
    message_id = parse_id(raw_id)
    async with state.db.connection() as connection, connection.transaction():
        deleted = await message_changes.delete_message(
            connection, principal.workspace_id, message_id
        )
        if deleted is None:
            raise NotFoundError("message", raw_id)
        details = {"messageId": str(message_id), "onServer": deleted.on_server}
        await _audit(
            connection, principal, "MESSAGE_DELETED", deleted.inbox_id, client_address, details
        )
    return message_id


async def _audit(
    connection: Connection,
    principal: Principal,
    action: str,
    inbox_id: uuid.UUID,
    client_address: str | None,
    details: dict[str, Any],
) -> None:
    await audit.record(
        connection,
        workspace_id=principal.workspace_id,
        action=action,
        inbox_id=inbox_id,
        api_key_prefix=principal.key_prefix,
        client_address=client_address,
        details=details,
    )


def watch_status_loader(state: AppState) -> DataLoader[uuid.UUID, WatchStatus | None]:
    """Per-request batching of ``EmailInbox.receiving``: one query for a list of inboxes (the
    inboxes were read for the caller's workspace already)."""

    async def load(keys: list[uuid.UUID]) -> list[WatchStatus | None]:
        async with state.db.connection() as connection:
            found = await watch_leases.read_statuses(connection, list(keys))
        return [found.get(key) for key in keys]

    return DataLoader(load_fn=load)
