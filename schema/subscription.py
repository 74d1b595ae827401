"""Live updates over graphql-transport-ws. Each subscription registers with the process's
LISTEN hub before its first read, so no change can slip between the read and the watch.

The resolvers below serve every subscription one by one. ``StatusFeeds`` serves the common one,
``emailInboxStatus``, for many subscribers at once: subscribers of the same inbox with the same
document, variables and permissions share one feed, which watches the hub once, reads once per
change, executes the selection once and encodes the payload once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from enum import Enum
from functools import partial
from typing import TypeVar

import strawberry
import structlog
from graphql import (
    GraphQLError,
)

from resolvers import inboxes, messages, sending
from schema.checks import ConnectionTest
from schema.context import Info, caller
from schema.enums import InboxStatus
from schema.messages import Message
from schema.sending import OutgoingMessage, OutgoingMessageState
from schema.types import EmailInbox
from storage.db import UNAVAILABLE_ERRORS
from storage.events import Event, EventKind
from storage.listener import EventHub
from storage.models import InboxStatus as ModelStatus
from storage.models import OutgoingState, Permission, TestState
from storage.models_mail import FINAL_OUTGOING_STATES

log = structlog.get_logger("inboxd.subscriptions")

T = TypeVar("T")
FINAL_TEST_STATES = {TestState.PASSED.value, TestState.FAILED.value, TestState.CANCELLED.value}


@strawberry.enum(description="What happened to an inbox.")
class EmailInboxEventKind(Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"
    MESSAGE_RECEIVED = "MESSAGE_RECEIVED"
    FOLDER_RESET = "FOLDER_RESET"
    OUTGOING_CHANGED = "OUTGOING_CHANGED"
    RESYNC = "RESYNC"


@strawberry.type(
    description="A change to an inbox of the workspace. RESYNC: the server lost "
    "its database connection for a while; re-read what you display. FOLDER_RESET: the mail "
    "server renumbered `folder` (its UIDVALIDITY changed); stored messages keep their ids. "
    "OUTGOING_CHANGED: an outgoing message was queued or changed state (`outgoingState`; "
    "`version` is then the message's)."
)
class EmailInboxEvent:
    kind: EmailInboxEventKind
    inbox_id: strawberry.ID | None
    version: int | None = strawberry.field(description="The version this change produced.")
    status: InboxStatus | None = strawberry.field(  # type: ignore[valid-type]
        description="The inbox's status at `version` (null for DELETED and RESYNC): with "
        "`kind` and `version`, the sequence of changes, however late `inbox` was read."
    )
    message_id: strawberry.ID | None = strawberry.field(
        default=None, description="MESSAGE_RECEIVED: the stored message (see `message(id)`)."
    )
    folder: str | None = strawberry.field(
        default=None, description="FOLDER_RESET: the folder the mail server renumbered."
    )
    outgoing_message_id: strawberry.ID | None = strawberry.field(
        default=None, description="OUTGOING_CHANGED: the message (see `outgoingMessage(id)`)."
    )
    outgoing_state: OutgoingMessageState | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="OUTGOING_CHANGED: the message's state at `version`."
    )
    inbox: EmailInbox | None = strawberry.field(
        description="The inbox as read when the event was delivered: its current state, so "
        "`inbox.version` may be past `version` when changes come quickly. Null once deleted."
    )


async def read_retried(read: Callable[[], Awaitable[T]]) -> T:
    """A subscription's read, retried through a short database outage instead of ending the
    subscription: the listener has just reconnected, the pool may still be catching up."""
    delay = 0.2
    for _ in range(8):
        try:
            return await read()
        except UNAVAILABLE_ERRORS:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
    return await read()


def _hub(info: Info) -> EventHub:
    hub = info.context.state.hub
    if hub is None:
        raise GraphQLError(
            "Subscriptions are not available on this server.", extensions={"code": "UNAVAILABLE"}
        )
    return hub


def _uuid(raw: str, kind: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise GraphQLError(f"No {kind} with id {raw}.", extensions={"code": "NOT_FOUND"}) from None


INBOX_EVENT_KINDS = {
    EventKind.CREATED,
    EventKind.UPDATED,
    EventKind.DELETED,
    EventKind.STATUS_CHANGED,
}
RECEIVING_EVENT_KINDS = {EventKind.MESSAGE_RECEIVED, EventKind.FOLDER_RESET}
WORKSPACE_EVENT_KINDS = INBOX_EVENT_KINDS | RECEIVING_EVENT_KINDS | {EventKind.OUTGOING_CHANGED}


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The inbox now, then after every change; completes when it is deleted."
    )
    async def email_inbox_status(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[EmailInbox, None]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state, hub = info.context.state, _hub(info)
        inbox_id = _uuid(id, "email inbox")
        async with hub.watch(
            principal.workspace_id,
            lambda e: e.inbox_id == inbox_id and e.kind in INBOX_EVENT_KINDS,
        ) as watcher:
            last_version = None
            row = await inboxes.get_inbox(state, principal, id)
            if row is None:
                raise GraphQLError(
                    f"No email inbox with id {id}.", extensions={"code": "NOT_FOUND"}
                )
            while True:
                if row is None:
                    return  # deleted
                if row.version != last_version:
                    last_version = row.version
                    yield EmailInbox.from_row(row)
                item = await watcher.queue.get()
                if isinstance(item, Event):
                    row = await read_retried(
                        partial(inboxes.read_shared, state, principal, inbox_id, item.version)
                    )
                else:  # RESYNC: events may have been missed, read the current state
                    row = await read_retried(partial(inboxes.get_inbox, state, principal, id))

    @strawberry.subscription(
        description="The test now, then each change; completes when the test has finished."
    )
    async def connection_test(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[ConnectionTest, None]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state, hub = info.context.state, _hub(info)
        test_id = _uuid(id, "connection test")
        async with hub.watch(
            principal.workspace_id,
            lambda e: e.test_id == test_id or (e.kind is EventKind.DELETED),
        ) as watcher:
            last_version = None
            while True:
                row = await read_retried(partial(inboxes.get_test, state, principal, id))
                if row is None:
                    if last_version is None:
                        raise GraphQLError(
                            f"No connection test with id {id}.", extensions={"code": "NOT_FOUND"}
                        )
                    return  # its inbox was deleted
                if row.version != last_version:
                    last_version = row.version
                    yield ConnectionTest.from_row(row)
                if row.state in FINAL_TEST_STATES:
                    return
                await watcher.queue.get()

    @strawberry.subscription(
        description="Created, updated, deleted and status-changed events for every inbox of "
        "the caller's workspace, each message received, each folder the mail server "
        "renumbered, and each outgoing message queued or changing state."
    )
    async def email_inbox_events(self, info: Info) -> AsyncGenerator[EmailInboxEvent, None]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state, hub = info.context.state, _hub(info)
        async with hub.watch(
            principal.workspace_id,
            lambda e: e.kind in WORKSPACE_EVENT_KINDS,
        ) as watcher:
            while True:
                item = await watcher.queue.get()
                if not isinstance(item, Event):
                    yield EmailInboxEvent(
                        kind=EmailInboxEventKind.RESYNC,
                        inbox_id=None,
                        version=None,
                        status=None,
                        inbox=None,
                    )
                    continue
                row = None
                if item.kind is EventKind.OUTGOING_CHANGED:
                    # The version is the message's: the inbox as it is now.
                    row = await read_retried(
                        partial(inboxes.get_inbox, state, principal, str(item.inbox_id))
                    )
                elif item.kind is not EventKind.DELETED:
                    row = await read_retried(
                        partial(inboxes.read_shared, state, principal, item.inbox_id, item.version)
                    )
                yield EmailInboxEvent(
                    kind=EmailInboxEventKind(item.kind.value),
                    inbox_id=strawberry.ID(str(item.inbox_id)),
                    version=item.version,
                    status=ModelStatus(item.status) if item.status else None,
                    inbox=EmailInbox.from_row(row) if row else None,
                    message_id=strawberry.ID(str(item.message_id)) if item.message_id else None,
                    folder=item.folder,
                    outgoing_message_id=strawberry.ID(str(item.outgoing_id))
                    if item.outgoing_id
                    else None,
                    outgoing_state=OutgoingState(item.outgoing_state)
                    if item.outgoing_state
                    else None,
                )

    @strawberry.subscription(
        description="Each message stored for the inbox from now on, once, as it arrives."
    )
    async def message_received(
        self, info: Info, inbox_id: strawberry.ID
    ) -> AsyncGenerator[Message, None]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state, hub = info.context.state, _hub(info)
        watched = _uuid(inbox_id, "email inbox")
        async with hub.watch(
            principal.workspace_id,
            lambda e: e.inbox_id == watched and e.kind is EventKind.MESSAGE_RECEIVED,
        ) as watcher:
            if await inboxes.get_inbox(state, principal, inbox_id) is None:
                raise GraphQLError(
                    f"No email inbox with id {inbox_id}.", extensions={"code": "NOT_FOUND"}
                )
            while True:
                item = await watcher.queue.get()
                if not isinstance(item, Event) or item.message_id is None:
                    continue  # RESYNC: read the inbox's messages to catch up
                # Stored by this process: the row its store returned, shared by every
                # subscriber here; stored elsewhere (or long gone from that cache): read.
                row = await state.recently_stored.received(item.message_id, principal.workspace_id)
                if row is None:
                    row = await read_retried(
                        partial(messages.get_message, state, principal, str(item.message_id))
                    )
                if row is not None:
                    yield Message.from_row(row)

    @strawberry.subscription(
        description="The outgoing message now, then each change of state; completes once it "
        "is SENT, FAILED or CANCELLED."
    )
    async def outgoing_message(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[OutgoingMessage, None]:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state, hub = info.context.state, _hub(info)
        outgoing_id = _uuid(id, "outgoing message")
        async with hub.watch(
            principal.workspace_id,
            lambda e: e.outgoing_id == outgoing_id or e.kind is EventKind.DELETED,
        ) as watcher:
            row = await sending.get_outgoing(state, principal, id)
            if row is None:
                raise GraphQLError(
                    f"No outgoing message with id {id}.", extensions={"code": "NOT_FOUND"}
                )
            seen, last_state = row.version, row.state
            yield OutgoingMessage.from_row(row)
            while last_state not in FINAL_OUTGOING_STATES:
                item = await watcher.queue.get()
                if (
                    isinstance(item, Event)
                    and item.outgoing_id is not None
                    and item.version <= seen
                ):
                    continue  # an inbox deletion is read below; an old change is ignored
                row = await read_retried(partial(sending.get_outgoing, state, principal, id))
                if row is None:
                    return  # its inbox was deleted
                if row.version <= seen:
                    continue
                shown = OutgoingMessage.from_row(row)
                seen, last_state = row.version, row.state
                if isinstance(item, Event) and item.outgoing_state and item.version < row.version:
                    # A state it has passed already: each change is streamed in order, with
                    # the other fields as read now.
                    seen, last_state = item.version, item.outgoing_state
                    shown.state = OutgoingState(last_state)
                    shown.version = seen
                yield shown
