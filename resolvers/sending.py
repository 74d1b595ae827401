"""What the sending fields do: ``sendEmail`` (checked, counted against the inbox's daily limit
and queued in one transaction), ``cancelEmail``, and reading the outbox. The sending itself is
``inboxd.outbox_worker``'s."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from mail.compose import ComposeError, check, make_message_id
from resolvers.outgoing_mail import message_id_domain, outgoing_from_new
from resolvers.pagination import check_first, decode_cursor
from resolvers.state import AppState
from resolvers.validation_issues import FieldIssue, InputInvalid, id_or_none, parse_id
from resolvers.validation_sending import normalize_send, reply_subject
from storage import audit, inboxes, messages, outbox
from storage.api_keys import Principal
from storage.db import Connection
from storage.errors import (
    DailySendLimitError,
    InboxNotActiveError,
    NotCancellableError,
    NotFoundError,
    RateLimitedError,
)
from storage.models import InboxStatus, utcnow
from storage.outbox import NewOutgoing, OutgoingRow
from storage.rows import InboxRow


class _KeyTaken(Exception):
    """A concurrent sendEmail with the same idempotency key committed first."""


def inbox_zone(inbox: InboxRow) -> tzinfo:
    """The zone whose days the inbox's daily limit counts: its ``timeZone``, else UTC."""
    return ZoneInfo(inbox.time_zone) if inbox.time_zone else UTC


def resets_at(day: date, zone: tzinfo = UTC) -> datetime:
    """When the daily count of ``day`` (a day in ``zone``) no longer applies: the next
    midnight there, in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def _refuse_unless_sending(inbox: InboxRow) -> None:
    if inbox.status != InboxStatus.ACTIVE.value:
        reason = f"its status is {inbox.status}; it sends once verified (ACTIVE)"
    elif not inbox.active:
        reason = "it is deactivated (active: false)"
    elif not inbox.sending_enabled:
        reason = "sending is switched off for it (sendingEnabled: false)"
    else:
        return
    raise InboxNotActiveError(inbox.id, reason)


async def _thread(
    connection: Connection, principal: Principal, inbox: InboxRow, new: NewOutgoing, raw: Any
) -> None:
    """Make ``new`` a reply to the inbox's stored message ``raw``: In-Reply-To its Message-ID,
    References its own and then that, the subject Re: (the original's if none was given)."""
    reply_id = parse_id(raw, "replyToMessageId")
    original = await messages.read_message(connection, principal.workspace_id, reply_id)
    if original is None or original.inbox_id != inbox.id:
        raise InputInvalid([FieldIssue("replyToMessageId", "is not a message of this inbox")])
    new.reply_to_message_id = original.id
    new.subject = reply_subject(new.subject or original.subject)
    if original.message_id:
        new.in_reply_to = original.message_id
        new.references = [*original.reference_ids, original.message_id]


def _check_composes(state: AppState, inbox: InboxRow, new: NewOutgoing, message_id: str) -> None:
    """What the worker will send must compose, within the size: the rules ``mail.compose``
    applies, and the message built only when it may be near the size cap."""
    try:
        check(
            outgoing_from_new(inbox, new, message_id, utcnow()),
            max_bytes=state.sending.max_message_bytes,
        )
    except ComposeError as exc:
        raise InputInvalid([FieldIssue(exc.field, exc.message)]) from None


async def send_email(
    state: AppState,
    principal: Principal,
    raw_inbox_id: str,
    data: Mapping[str, Any],
    *,
    client_address: str | None = None,
) -> OutgoingRow:
    inbox_id = parse_id(raw_inbox_id, "inboxId")
    now = utcnow()
    new = normalize_send(data, state.sending, allow_private=state.allow_private_hosts, now=now)
    async with state.db.connection() as connection:
        if new.idempotency_key is None:  # queued in one statement: no transaction needed
            queued = await _queue(
                state, connection, principal, inbox_id, new, data, client_address, now
            )
        else:
            try:
                async with connection.transaction():
                    queued = await _queue(
                        state, connection, principal, inbox_id, new, data, client_address, now
                    )
            except _KeyTaken:
                first = await outbox.by_idempotency_key(connection, inbox_id, new.idempotency_key)
                if first is None:  # pragma: no cover - the winner's row cannot vanish so soon
                    raise RuntimeError("idempotent send vanished") from None
                return first
    state.wake_local_workers()
    return queued


async def _queue(
    state: AppState,
    connection: Connection,
    principal: Principal,
    inbox_id: uuid.UUID,
    new: NewOutgoing,
    data: Mapping[str, Any],
    client_address: str | None,
    now: datetime,
) -> OutgoingRow:
    inbox = await inboxes.get_inbox(connection, principal.workspace_id, inbox_id)
    _refuse_unless_sending(inbox)
    if new.idempotency_key is not None:
        first = await outbox.by_idempotency_key(connection, inbox.id, new.idempotency_key)
        if first is not None:
            return first
    if data.get("reply_to_message_id") is not None:
        await _thread(connection, principal, inbox, new, data["reply_to_message_id"])
    message_id = make_message_id(message_id_domain(inbox))
    _check_composes(state, inbox, new, message_id)
    zone = inbox_zone(inbox)
    day = (new.send_at or now).astimezone(zone).date()
    limit = inbox.daily_send_limit
    outgoing_id = uuid.uuid4()
    per_minute = state.sending.per_inbox_per_minute
    queued = await outbox.enqueue(
        connection,
        outgoing_id=outgoing_id,
        workspace_id=principal.workspace_id,
        inbox_id=inbox.id,
        message=new,
        message_id=message_id,
        count_day=day,
        per_minute=per_minute,
        daily_limit=limit,
        audit_row=outbox.Audit(
            "EMAIL_SENT", principal.key_prefix, client_address, _sent_details(outgoing_id, new)
        ),
    )
    if queued.rate_limited:
        assert queued.oldest_recent is not None
        wait = (queued.oldest_recent + outbox.RATE_WINDOW - utcnow()).total_seconds()
        raise RateLimitedError(
            max(1, math.ceil(wait)), f"at most {per_minute} sendEmail per inbox per minute"
        )
    if queued.limit_reached:
        raise DailySendLimitError(limit, resets_at(day, zone))
    if queued.row is None:
        raise _KeyTaken  # the caller's transaction rolls back this send's count
    return queued.row


def _sent_details(outgoing_id: uuid.UUID, new: NewOutgoing) -> dict[str, Any]:
    # Who and what, never the bodies: ids, counts and times (as cancelEmail's, below).
    return {
        "outgoingMessageId": str(outgoing_id),
        "recipients": len(new.to) + len(new.cc) + len(new.bcc),
        "attachments": len(new.attachments),
        "sendAt": new.send_at.astimezone(UTC).isoformat() if new.send_at else None,
        "replyToMessageId": str(new.reply_to_message_id) if new.reply_to_message_id else None,
    }


async def cancel_email(
    state: AppState, principal: Principal, raw_id: str, *, client_address: str | None = None
) -> OutgoingRow:
    outgoing_id = parse_id(raw_id)
    async with state.db.connection() as connection, connection.transaction():
        row = await outbox.cancel_outgoing(connection, principal.workspace_id, outgoing_id)
        if row is None:
            current = await outbox.read_outgoing(connection, principal.workspace_id, outgoing_id)
            if current is None:
                raise NotFoundError("outgoing message", raw_id)
            raise NotCancellableError(current.id, current.state)
        await _audit(connection, principal, "EMAIL_CANCELLED", row, client_address)
    return row


async def _audit(
    connection: Connection,
    principal: Principal,
    action: str,
    row: OutgoingRow,
    client_address: str | None,
) -> None:
    # Who and what, never the bodies: ids, counts and times.
    details = {
        "outgoingMessageId": str(row.id),
        "recipients": len(row.to_addresses) + len(row.cc_addresses) + len(row.bcc_addresses),
        "attachments": len(row.attachments),
        "sendAt": row.send_at.isoformat() if row.send_at else None,
        "replyToMessageId": str(row.reply_to_message_id) if row.reply_to_message_id else None,
    }
    await audit.record(
        connection,
        workspace_id=principal.workspace_id,
        action=action,
        inbox_id=row.inbox_id,
        api_key_prefix=principal.key_prefix,
        client_address=client_address,
        details=details,
    )


async def get_outgoing(state: AppState, principal: Principal, raw_id: str) -> OutgoingRow | None:
    outgoing_id = id_or_none(raw_id)
    if outgoing_id is None:
        return None
    async with state.db.connection() as connection:
        return await outbox.read_outgoing(connection, principal.workspace_id, outgoing_id)


async def list_outgoing(
    state: AppState,
    principal: Principal,
    raw_inbox_id: str,
    *,
    first: int,
    after: str | None,
    outgoing_state: str | None,
) -> tuple[list[OutgoingRow], bool]:
    """A page of the inbox's outbox, newest first (none for an inbox the caller cannot see)."""
    check_first(first, state.max_page_size)
    cursor = decode_cursor(after)
    inbox_id = id_or_none(raw_inbox_id)
    if inbox_id is None:
        return [], False
    async with state.db.connection() as connection:
        return await outbox.list_outgoing(
            connection,
            principal.workspace_id,
            inbox_id,
            first=first,
            before=cursor,
            state=outgoing_state,
        )
