"""What the email inbox fields and mutations do."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, cast

from strawberry.dataloader import DataLoader

from resolvers.domain import fill_from_discovery
from resolvers.pagination import check_first, decode_cursor
from resolvers.state import AppState
from resolvers.validation import (
    FieldIssue,
    Problems,
    camel,
    normalize_create,
    normalize_email,
    normalize_update,
    parse_id,
    refuse_nul,
)
from storage import audit, inbox_reads, inboxes, jobs, workspaces
from storage.api_keys import Principal
from storage.db import Connection
from storage.errors import RateLimitedError
from storage.models import utcnow
from storage.rows import AuditRow, InboxRow, TestRow, WorkspaceRow
from storage.secrets import Secret


@dataclass(frozen=True, slots=True)
class InboxWrite:
    inbox: InboxRow
    warnings: list[FieldIssue]


async def get_inbox(state: AppState, principal: Principal, raw_id: str) -> InboxRow | None:
    try:
        inbox_id = uuid.UUID(str(raw_id))
    except ValueError:
        return None
    async with state.db.connection() as connection:
        return await inbox_reads.read_inbox(connection, principal.workspace_id, inbox_id)


async def read_shared(
    state: AppState, principal: Principal, inbox_id: uuid.UUID, version: int
) -> InboxRow | None:
    """The inbox as of event ``version``, read once per process however many subscribers
    asked: one status change must not turn into ten thousand identical SELECTs.

    The read is a task of its own, not the first caller's: a caller that leaves (its
    subscription cancelled) never cancels the read the others wait for."""
    key = (principal.workspace_id, inbox_id, version)
    read = state.shared_reads.get(key)
    if read is None:
        read = asyncio.create_task(_read_inbox(state, principal.workspace_id, inbox_id))
        state.shared_reads[key] = read
        read.add_done_callback(partial(_read_done, state, key))
    return cast(InboxRow | None, await asyncio.shield(read))


async def _read_inbox(
    state: AppState, workspace_id: uuid.UUID, inbox_id: uuid.UUID
) -> InboxRow | None:
    async with state.db.connection() as connection:
        return await inbox_reads.read_inbox(connection, workspace_id, inbox_id)


def _read_done(
    state: AppState, key: tuple[uuid.UUID, uuid.UUID, int], read: asyncio.Future[Any]
) -> None:
    if read.cancelled() or read.exception() is not None:  # retrieved: every waiter has it
        state.shared_reads.pop(key, None)
        return
    # Late subscribers of the same event still share it; then it is dropped.
    asyncio.get_running_loop().call_later(5.0, state.shared_reads.pop, key, None)


async def list_inboxes(
    state: AppState,
    principal: Principal,
    *,
    first: int,
    after: str | None,
    flt: inbox_reads.InboxFilter,
) -> inbox_reads.Page:
    check_first(first, state.max_page_size)
    cursor = decode_cursor(after)
    refuse_nul({"search": flt.search, "department": flt.department, "tag": flt.tag}, "filter")
    async with state.db.connection() as connection:
        return await inbox_reads.read_page(
            connection, principal.workspace_id, first=first, after=cursor, flt=flt
        )


async def _audit(
    connection: Connection,
    principal: Principal,
    action: str,
    inbox_id: uuid.UUID | None,
    client_address: str | None,
    details: dict[str, Any] | None = None,
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


def changed_fields(values: Mapping[str, Any], passwords: Mapping[str, Secret]) -> list[str]:
    """The input paths (never the values) an update touched, e.g. ``smtp.password``."""

    def path(column: str) -> str:
        side, _, rest = column.partition("_")
        if side in ("smtp", "imap") and rest:
            return f"{side}.{camel(rest)}"
        return camel(column)

    return sorted({path(k) for k in values} | {path(k) for k in passwords})


async def create_inbox(
    state: AppState,
    principal: Principal,
    data: Mapping[str, Any],
    *,
    client_address: str | None = None,
) -> InboxWrite:
    normalized = normalize_create(
        await fill_from_discovery(state, data), allow_private_hosts=state.allow_private_hosts
    )
    async with state.db.connection() as connection:
        inbox = await inboxes.create_inbox(
            connection,
            workspace_id=principal.workspace_id,
            values=normalized.values,
            smtp_password=normalized.passwords.get("smtp_password"),
            imap_password=normalized.passwords.get("imap_password"),
            tokens={k: v for k, v in normalized.passwords.items() if k.startswith("oauth_")},
            keyring=state.keyring,
            audit=inboxes.AuditNote(
                principal.key_prefix, client_address, {"email": normalized.values["email"]}
            ),
            spacing=state.verification_spacing,
        )
    state.wake_local_workers()  # its first verification is queued
    return InboxWrite(inbox, normalized.warnings)


async def update_inbox(
    state: AppState,
    principal: Principal,
    raw_id: str,
    data: Mapping[str, Any],
    expected_version: int | None = None,
    *,
    client_address: str | None = None,
) -> InboxWrite:
    inbox_id = parse_id(raw_id)
    async with state.db.connection() as connection, connection.transaction():
        current = await inboxes.get_inbox(connection, principal.workspace_id, inbox_id)
        normalized = normalize_update(current, data, allow_private_hosts=state.allow_private_hosts)
        before = current.version
        inbox, _ = await inboxes.update_inbox(
            connection,
            workspace_id=principal.workspace_id,
            inbox_id=inbox_id,
            changes=normalized.values,
            new_passwords=normalized.passwords,
            keyring=state.keyring,
            expected_version=expected_version,
            spacing=state.verification_spacing,
        )
        if inbox.version != before:
            await _audit(
                connection,
                principal,
                "INBOX_UPDATED",
                inbox.id,
                client_address,
                {"fields": changed_fields(normalized.values, normalized.passwords)},
            )
    if inbox.version != before:
        state.wake_local_workers()  # a changed connection is verified again
    return InboxWrite(inbox, normalized.warnings)


async def delete_inbox(
    state: AppState, principal: Principal, raw_id: str, *, client_address: str | None = None
) -> uuid.UUID:
    inbox_id = parse_id(raw_id)
    async with state.db.connection() as connection, connection.transaction():
        await inboxes.delete_inbox(connection, principal.workspace_id, inbox_id)
        await _audit(connection, principal, "INBOX_DELETED", inbox_id, client_address)
    return inbox_id


async def test_connection(
    state: AppState,
    principal: Principal,
    raw_id: str,
    *,
    round_trip: bool = False,
    to: str | None = None,
    client_address: str | None = None,
) -> TestRow:
    """Queue a verification (with a send-and-receive round trip if asked) of an inbox.

    The test already open for the inbox is returned as it is. New ones are limited per inbox
    (``tests_per_inbox_per_minute``), counted in Postgres so the limit holds across processes.
    """
    inbox_id = parse_id(raw_id)
    recipient = None
    if to is not None:
        problems = Problems()
        recipient = normalize_email(to, "to", problems, allow_private=state.allow_private_hosts)
        problems.raise_if_any()
    async with state.db.connection() as connection, connection.transaction():
        # The row lock makes concurrent requests for one inbox count one after the other.
        inbox = await inboxes.get_inbox(
            connection, principal.workspace_id, inbox_id, for_update=True
        )
        existing = await jobs.get_open_test(connection, inbox.id)
        if existing is not None:
            return existing
        limit = state.tests_per_inbox_per_minute
        if limit > 0:
            window = timedelta(minutes=1)
            recent = await jobs.manual_tests_since(connection, inbox.id, window)
            if len(recent) >= limit:
                wait = (recent[-limit] + window - utcnow()).total_seconds()
                raise RateLimitedError(
                    max(1, math.ceil(wait)),
                    f"at most {limit} connection tests per inbox per minute",
                )
        test = await jobs.enqueue_test(
            connection,
            inbox,
            reason="ROUND_TRIP" if round_trip else "MANUAL",
            round_trip=round_trip,
            round_trip_to=recipient,
            spacing=state.verification_spacing,
        )
        await _audit(
            connection,
            principal,
            "TEST_EMAIL_REQUESTED" if round_trip else "CONNECTION_TEST_REQUESTED",
            inbox.id,
            client_address,
            {"to": recipient} if recipient else None,
        )
    state.wake_local_workers()
    return test


@dataclass(frozen=True, slots=True)
class Viewer:
    workspace: WorkspaceRow
    permissions: list[str]
    inbox_usage: int


async def viewer(state: AppState, principal: Principal) -> Viewer:
    async with state.db.connection() as connection:
        workspace = await workspaces.get_workspace(connection, principal.workspace_id)
        usage = await inboxes.count_inboxes(connection, principal.workspace_id)
    return Viewer(workspace, sorted(principal.permissions), usage)


async def get_test(state: AppState, principal: Principal, raw_id: str) -> TestRow | None:
    try:
        test_id = uuid.UUID(str(raw_id))
    except ValueError:
        return None
    async with state.db.connection() as connection:
        return await jobs.read_test(connection, principal.workspace_id, test_id)


async def list_tests(
    state: AppState, principal: Principal, inbox_id: str, *, first: int, after: str | None
) -> tuple[list[TestRow], bool]:
    check_first(first, state.max_page_size)
    before = decode_cursor(after)
    async with state.db.connection() as connection:
        return await jobs.list_tests(
            connection, principal.workspace_id, parse_id(inbox_id), first=first, before=before
        )


async def audit_log(
    state: AppState,
    principal: Principal,
    *,
    first: int,
    after: str | None,
    inbox_id: str | None,
) -> tuple[list[AuditRow], bool]:
    check_first(first, state.max_page_size)
    before = decode_cursor(after)
    inbox = parse_id(inbox_id, "inboxId") if inbox_id else None
    async with state.db.connection() as connection:
        return await audit.list_events(
            connection, principal.workspace_id, first=first, before=before, inbox_id=inbox
        )


TestsPage = tuple[list[TestRow], bool]


def tests_loader(state: AppState, principal: Principal) -> DataLoader[tuple[str, int], TestsPage]:
    """Per-request batching of ``EmailInbox.connectionTests(first)``: one query for a whole
    list of inboxes instead of one per inbox."""

    async def load(keys: list[tuple[str, int]]) -> list[TestsPage]:
        by_first: dict[int, list[uuid.UUID]] = {}
        for raw_id, first in keys:
            by_first.setdefault(first, []).append(uuid.UUID(raw_id))
        pages: dict[tuple[str, int], TestsPage] = {}
        async with state.db.connection() as connection:
            for first, ids in by_first.items():
                found = await jobs.latest_tests(connection, principal.workspace_id, ids, first)
                for inbox_id, page in found.items():
                    pages[(str(inbox_id), first)] = page
        return [pages[key] for key in keys]

    return DataLoader(load_fn=load)
