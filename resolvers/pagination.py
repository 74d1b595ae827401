"""Keyset pagination: opaque cursors over (timestamp, id), and the page size check."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from resolvers.validation import FieldIssue, InputInvalid

Cursor = tuple[datetime, uuid.UUID]


def check_first(first: int, limit: int) -> None:
    if not 0 <= first <= limit:
        raise InputInvalid([FieldIssue("first", f"must be between 0 and {limit} (got {first})")])


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Cursor | None:
    """None for no cursor; a field error on ``after`` for anything this API did not make."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, row_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except ValueError as exc:
        raise InputInvalid([FieldIssue("after", "is not a cursor from this API")]) from exc
