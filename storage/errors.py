"""What storage refuses, as exceptions: the GraphQL edge turns each into a typed error."""

from __future__ import annotations

import uuid
from datetime import datetime


class StorageError(Exception):
    pass


class NotFoundError(StorageError):
    def __init__(self, kind: str, id: object) -> None:
        super().__init__(f"{kind} {id} not found")
        self.kind = kind
        self.id = id


class DuplicateEmailError(StorageError):
    def __init__(self, email: str, existing_id: uuid.UUID | None) -> None:
        super().__init__(f"an inbox for {email} already exists in this workspace")
        self.email = email
        self.existing_id = existing_id


class InboxLimitError(StorageError):
    def __init__(self, current_usage: int, max_inboxes: int, requested: int = 1) -> None:
        super().__init__(f"inbox limit reached ({current_usage}/{max_inboxes})")
        self.current_usage = current_usage
        self.max_inboxes = max_inboxes
        self.requested = requested


class SubscriptionInactiveError(StorageError):
    pass


class VersionConflictError(StorageError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"the inbox changed (version {actual}, expected {expected})")
        self.expected = expected
        self.actual = actual


class RateLimitedError(StorageError):
    def __init__(self, retry_after_seconds: int, what: str) -> None:
        super().__init__(f"{what}; retry in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds
        self.what = what


class InboxNotActiveError(StorageError):
    def __init__(self, inbox_id: uuid.UUID, reason: str) -> None:
        super().__init__(f"inbox {inbox_id} cannot send: {reason}")
        self.inbox_id = inbox_id
        self.reason = reason


class DailySendLimitError(StorageError):
    def __init__(self, limit: int, resets_at: datetime) -> None:
        super().__init__(f"daily send limit of {limit} reached; resets at {resets_at}")
        self.limit = limit
        self.resets_at = resets_at


class NotCancellableError(StorageError):
    def __init__(self, outgoing_id: uuid.UUID, state: str) -> None:
        super().__init__(f"outgoing message {outgoing_id} is {state}, not QUEUED")
        self.outgoing_id = outgoing_id
        self.state = state
