"""The one shape of every mutation: the caller's permission checked, the resolver called with
the state, the principal and the client's address, a resolver's typed refusal answered as
one of the payload's error members and its result as the success member."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from resolvers.state import AppState
from resolvers.validation import InputInvalid
from schema.context import Info, caller
from schema.errors import UserError, user_error
from storage.api_keys import Principal
from storage.errors import StorageError
from storage.models import Permission

T = TypeVar("T")
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Call:
    """What a resolver is called with."""

    state: AppState
    principal: Principal
    client_address: str | None


async def mutate(
    info: Info,
    run: Callable[[Call], Awaitable[T]],
    success: Callable[[T], P],
    *,
    errors: Callable[[InputInvalid | StorageError], UserError] = user_error,
    permission: Permission = Permission.MANAGE_EMAIL_INBOX,
) -> P:
    """``success(await run(call))``, or the typed error for what ``run`` refused. A refusal
    the payload's union has no member for fails the request (``errors`` raises, or Strawberry
    refuses the type): each union's members are checked by tests/schema."""
    principal = caller(info, permission)
    call = Call(info.context.state, principal, info.context.client_address)
    try:
        result = await run(call)
    except (InputInvalid, StorageError) as exc:
        return cast(P, errors(exc))
    return success(result)
