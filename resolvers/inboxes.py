"""What the email inbox fields and mutations do."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from resolvers.domain import fill_from_discovery
from resolvers.state import AppState
from resolvers.validation import (
    FieldIssue,
    InputInvalid,
    Problems,
    normalize_create,
    normalize_email,
    normalize_update,
    parse_id,
)
from storage import inboxes, jobs, workspaces
from storage.api_keys import Principal
from storage.errors import NotFoundError
from storage.models import ConnectionTest, EmailInbox, Workspace


@dataclass(frozen=True, slots=True)
class InboxWrite:
    inbox: EmailInbox
    test: ConnectionTest | None
    warnings: list[FieldIssue]


async def get_inbox(state: AppState, principal: Principal, raw_id: str) -> EmailInbox | None:
    try:
        inbox_id = uuid.UUID(str(raw_id))
    except ValueError:
        return None
    async with state.db.sessions() as session:
        try:
            return await inboxes.get_inbox(session, principal.workspace_id, inbox_id)
        except NotFoundError:
            return None


async def list_inboxes(
    state: AppState,
    principal: Principal,
    *,
    first: int,
    after: str | None,
    flt: inboxes.InboxFilter,
) -> inboxes.Page:
    if not 0 <= first <= state.max_page_size:
        raise InputInvalid(
            [FieldIssue("first", f"must be between 0 and {state.max_page_size} (got {first})")]
        )
    cursor = None
    if after:
        try:
            cursor = inboxes.decode_cursor(after)
        except ValueError as exc:
            raise InputInvalid([FieldIssue("after", "is not a cursor from this API")]) from exc
    async with state.db.sessions() as session:
        return await inboxes.list_inboxes(
            session, principal.workspace_id, first=first, after=cursor, flt=flt
        )


async def create_inbox(
    state: AppState, principal: Principal, data: Mapping[str, Any]
) -> InboxWrite:
    normalized = normalize_create(await fill_from_discovery(state, data))
    async with state.db.transaction() as session:
        inbox, test = await inboxes.create_inbox(
            session,
            workspace_id=principal.workspace_id,
            values=normalized.values,
            smtp_password=normalized.passwords["smtp_password"],
            imap_password=normalized.passwords["imap_password"],
            keyring=state.keyring,
        )
    return InboxWrite(inbox, test, normalized.warnings)


async def update_inbox(
    state: AppState,
    principal: Principal,
    raw_id: str,
    data: Mapping[str, Any],
    expected_version: int | None = None,
) -> InboxWrite:
    inbox_id = parse_id(raw_id)
    async with state.db.transaction() as session:
        current = await inboxes.get_inbox(session, principal.workspace_id, inbox_id)
        normalized = normalize_update(current, data)
        inbox, test = await inboxes.update_inbox(
            session,
            workspace_id=principal.workspace_id,
            inbox_id=inbox_id,
            changes=normalized.values,
            new_passwords=normalized.passwords,
            keyring=state.keyring,
            expected_version=expected_version,
        )
    return InboxWrite(inbox, test, normalized.warnings)


async def delete_inbox(state: AppState, principal: Principal, raw_id: str) -> uuid.UUID:
    inbox_id = parse_id(raw_id)
    async with state.db.transaction() as session:
        await inboxes.delete_inbox(session, principal.workspace_id, inbox_id)
    return inbox_id


async def test_connection(
    state: AppState,
    principal: Principal,
    raw_id: str,
    *,
    round_trip: bool = False,
    to: str | None = None,
) -> ConnectionTest:
    """Queue a verification (with a send-and-receive round trip if asked) of an inbox."""
    inbox_id = parse_id(raw_id)
    recipient = None
    if to is not None:
        problems = Problems()
        recipient = normalize_email(to, "to", problems)
        problems.raise_if_any()
    async with state.db.transaction() as session:
        inbox = await inboxes.get_inbox(session, principal.workspace_id, inbox_id)
        return await jobs.enqueue_test(
            session,
            inbox,
            reason="ROUND_TRIP" if round_trip else "MANUAL",
            round_trip=round_trip,
            round_trip_to=recipient,
        )


@dataclass(frozen=True, slots=True)
class Viewer:
    workspace: Workspace
    permissions: list[str]
    inbox_usage: int


async def viewer(state: AppState, principal: Principal) -> Viewer:
    async with state.db.sessions() as session:
        workspace = await workspaces.get_workspace(session, principal.workspace_id)
        usage = await inboxes.count_inboxes(session, principal.workspace_id)
    return Viewer(workspace, sorted(principal.permissions), usage)


async def get_test(state: AppState, principal: Principal, raw_id: str) -> ConnectionTest | None:
    try:
        test_id = uuid.UUID(str(raw_id))
    except ValueError:
        return None
    async with state.db.sessions() as session:
        try:
            return await jobs.get_test(session, principal.workspace_id, test_id)
        except NotFoundError:
            return None


def encode_test_cursor(test: ConnectionTest) -> str:
    return base64.urlsafe_b64encode(test.created_at.isoformat().encode()).decode().rstrip("=")


async def list_tests(
    state: AppState, principal: Principal, inbox_id: str, *, first: int, after: str | None
) -> tuple[list[ConnectionTest], bool]:
    if not 0 <= first <= state.max_page_size:
        raise InputInvalid(
            [FieldIssue("first", f"must be between 0 and {state.max_page_size} (got {first})")]
        )
    before = None
    if after:
        try:
            padded = after + "=" * (-len(after) % 4)
            before = datetime.fromisoformat(base64.urlsafe_b64decode(padded).decode())
        except ValueError as exc:
            raise InputInvalid([FieldIssue("after", "is not a cursor from this API")]) from exc
    async with state.db.sessions() as session:
        return await jobs.list_tests(
            session, principal.workspace_id, parse_id(inbox_id), first=first, before=before
        )
