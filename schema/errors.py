"""Errors as data: one GraphQL type per outcome a client can act on."""

from __future__ import annotations

import strawberry

from resolvers.validation import FieldIssue, InputInvalid
from storage.errors import (
    DuplicateEmailError,
    InboxLimitError,
    NotFoundError,
    RateLimitedError,
    StorageError,
    SubscriptionInactiveError,
    VersionConflictError,
)


@strawberry.interface(description="Something the caller can fix; `code` is stable for programs.")
class UserError:
    code: str
    message: str


@strawberry.type
class FieldError:
    field: str = strawberry.field(description="Input path in camelCase, e.g. `smtp.port`.")
    message: str

    @classmethod
    def from_issue(cls, issue: FieldIssue) -> FieldError:
        return cls(field=issue.field, message=issue.message)


@strawberry.type(description="The input was refused; every field at fault is listed.")
class ValidationError(UserError):
    fields: list[FieldError]


@strawberry.type(description="This workspace already has an inbox for that address.")
class DuplicateEmailInbox(UserError):
    email: str
    existing_id: strawberry.ID | None


@strawberry.type(description="The workspace's plan allows no more inboxes.")
class InboxLimitReached(UserError):
    current_usage: int
    max_inboxes: int
    requested: int


@strawberry.type(description="The workspace needs an active subscription for this.")
class SubscriptionRequired(UserError):
    pass


@strawberry.type(description="No such object in this workspace.")
class NotFound(UserError):
    id: strawberry.ID


@strawberry.type(description="Too many requests of this kind; try again after the wait.")
class RateLimited(UserError):
    retry_after_seconds: int


@strawberry.type(description="Someone else changed the object first; re-read and retry.")
class VersionConflict(UserError):
    expected_version: int
    current_version: int


def validation_error(exc: InputInvalid) -> ValidationError:
    return ValidationError(
        code="VALIDATION_FAILED",
        message="Some fields are invalid: "
        + "; ".join(f"{i.field} {i.message}" for i in exc.issues),
        fields=[FieldError.from_issue(i) for i in exc.issues],
    )


def user_error(exc: StorageError | InputInvalid) -> UserError:
    """The typed error for an exception from a resolver. Unknown kinds propagate."""
    match exc:
        case InputInvalid():
            return validation_error(exc)
        case DuplicateEmailError():
            return DuplicateEmailInbox(
                code="DUPLICATE_EMAIL_INBOX",
                message=f"An inbox for {exc.email} already exists in this workspace.",
                email=exc.email,
                existing_id=strawberry.ID(str(exc.existing_id)) if exc.existing_id else None,
            )
        case InboxLimitError():
            return InboxLimitReached(
                code="INBOX_LIMIT_REACHED",
                message=f"The plan allows {exc.max_inboxes} inboxes and {exc.current_usage} "
                "exist: delete one or raise the workspace's limit.",
                current_usage=exc.current_usage,
                max_inboxes=exc.max_inboxes,
                requested=exc.requested,
            )
        case SubscriptionInactiveError():
            return SubscriptionRequired(
                code="SUBSCRIPTION_REQUIRED",
                message="The workspace needs an active subscription to add inboxes.",
            )
        case NotFoundError():
            return NotFound(
                code="NOT_FOUND",
                message=f"No {exc.kind} with id {exc.id} in this workspace.",
                id=strawberry.ID(str(exc.id)),
            )
        case RateLimitedError():
            return RateLimited(
                code="RATE_LIMITED",
                message=f"Rate limited: {exc.what}. Retry in {exc.retry_after_seconds} s.",
                retry_after_seconds=exc.retry_after_seconds,
            )
        case VersionConflictError():
            return VersionConflict(
                code="VERSION_CONFLICT",
                message=str(exc),
                expected_version=exc.expected,
                current_version=exc.actual,
            )
    raise exc
