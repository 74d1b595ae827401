"""The per-request context, built once in ``get_context`` and reached through ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from strawberry.types import Info as StrawberryInfo

from resolvers.auth import AuthError, require
from resolvers.state import AppState
from resolvers.validation import InputInvalid
from storage.api_keys import Principal
from storage.models import Permission


@dataclass(slots=True)
class Context:
    state: AppState
    principal: Principal | None
    request_id: str
    client_address: str | None = None
    # Set by Strawberry from a websocket's connection_init payload.
    connection_params: dict[str, Any] | None = None
    # The database could not be asked who is calling: fields answer SERVICE_UNAVAILABLE.
    unavailable: bool = False
    # This websocket connection is counted against its key's connection limit.
    counted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Info = StrawberryInfo[Context, None]


def auth_error(exc: AuthError) -> GraphQLError:
    return GraphQLError(str(exc), extensions={"code": exc.code})


def bad_input(exc: InputInvalid) -> GraphQLError:
    """Invalid arguments to a query field: a top-level error naming each argument at fault."""
    detail = "; ".join(f"{i.field} {i.message}" for i in exc.issues)
    return GraphQLError(
        f"Invalid arguments: {detail}",
        extensions={
            "code": "BAD_USER_INPUT",
            "fields": [{"field": i.field, "message": i.message} for i in exc.issues],
        },
    )


def unavailable(exc: Exception) -> GraphQLError:
    return GraphQLError(str(exc), extensions={"code": "UNAVAILABLE"})


def caller(info: Info, permission: Permission) -> Principal:
    """The principal, if it holds ``permission``; else a top-level UNAUTHENTICATED/FORBIDDEN."""
    if info.context.unavailable:
        raise GraphQLError(
            "The service is temporarily unavailable (database unreachable); retry shortly.",
            extensions={"code": "SERVICE_UNAVAILABLE", "requestId": info.context.request_id},
        )
    try:
        return require(info.context.principal, permission)
    except AuthError as exc:
        raise auth_error(exc) from None
