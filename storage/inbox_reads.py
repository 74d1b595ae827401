"""Reading inboxes for display: one by id, or a filtered page, on a plain asyncpg connection.

Rows come back as ``InboxRow`` records (see ``storage.rows``). Every query
takes the caller's ``workspace_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Connection
from storage.models import EmailInbox
from storage.rows import InboxRow, columns


@dataclass(frozen=True, slots=True)
class InboxFilter:
    search: str | None = None
    status: str | None = None
    department: str | None = None
    tag: str | None = None
    active: bool | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[InboxRow]
    has_next_page: bool
    total_count: int


INBOX_COLUMNS = columns(EmailInbox)
# SQL below is assembled from fixed fragments (column names, clauses); values are always
# positional parameters, hence the S608 exemptions.
READ_INBOX_SQL = f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE id = $1 AND workspace_id = $2"  # noqa: S608


async def read_inbox(
    connection: Connection, workspace_id: uuid.UUID, inbox_id: uuid.UUID
) -> InboxRow | None:
    """One inbox of the workspace, for display, or None."""
    row: InboxRow | None = await connection.fetchrow(
        READ_INBOX_SQL, inbox_id, workspace_id, record_class=InboxRow
    )
    return row


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_sql(workspace_id: uuid.UUID, flt: InboxFilter) -> tuple[list[str], list[Any]]:
    """WHERE clauses (positional parameters) and their arguments."""
    args: list[Any] = [workspace_id]
    clauses = ["workspace_id = $1"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if flt.search:
        pattern = arg(f"%{_escape_like(flt.search)}%")
        clauses.append(
            "("
            + " OR ".join(
                f"{column} ILIKE {pattern} ESCAPE '\\'"
                for column in ("name", "email", "display_name")
            )
            + ")"
        )
    if flt.status is not None:
        clauses.append(f"status = {arg(flt.status)}")
    if flt.department is not None:
        clauses.append(f"department = {arg(flt.department)}")
    if flt.tag is not None:
        clauses.append(f"tags @> ARRAY[{arg(flt.tag)}::text]")
    if flt.active is not None:
        clauses.append(f"active = {arg(flt.active)}")
    return clauses, args


async def read_page(
    connection: Connection,
    workspace_id: uuid.UUID,
    *,
    first: int,
    after: tuple[datetime, uuid.UUID] | None,
    flt: InboxFilter,
    with_total: bool = True,
) -> Page:
    """A page of the workspace's inboxes, oldest first, after the keyset cursor ``after``.

    The SQL text depends only on which filters are set, so asyncpg's statement cache keeps
    one prepared statement per shape.
    """
    clauses, args = _filter_sql(workspace_id, flt)
    page_clauses, page_args = list(clauses), list(args)
    if after is not None:
        n = len(page_args)
        page_clauses.append(f"(created_at, id) > (${n + 1}, ${n + 2})")
        page_args += list(after)
    page_args.append(first + 1)
    rows: list[InboxRow] = await connection.fetch(
        f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE {' AND '.join(page_clauses)} "  # noqa: S608
        f"ORDER BY created_at, id LIMIT ${len(page_args)}",
        *page_args,
        record_class=InboxRow,
    )
    total = -1
    if with_total:
        total = await connection.fetchval(
            f"SELECT count(*) FROM email_inbox WHERE {' AND '.join(clauses)}",  # noqa: S608
            *args,
        )
    return Page(items=rows[:first], has_next_page=len(rows) > first, total_count=total)
