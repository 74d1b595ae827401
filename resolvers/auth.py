"""Turning credentials into a principal, and checking what the principal may do."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers

from resolvers.state import AppState
from storage import api_keys
from storage.api_keys import KeyRefusal, Principal
from storage.models import Permission


class AuthError(Exception):
    """Refused before any field ran: ``code`` is UNAUTHENTICATED or FORBIDDEN."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def key_from_headers(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return authorization.strip()
    return headers.get("x-api-key")


def key_from_connection_params(params: object) -> str | None:
    if not isinstance(params, dict):
        return None
    for name in ("authorization", "Authorization"):
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            scheme, _, rest = value.strip().partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else value.strip()
    for name in ("apiKey", "x-api-key", "X-Api-Key"):
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class Authentication:
    """What a key turned out to be: a principal, or why there is none."""

    principal: Principal | None
    refusal: KeyRefusal | None = None


async def check_key(state: AppState, key: str | None) -> Authentication:
    if not key:
        return Authentication(None, KeyRefusal.MISSING)
    async with state.db.connection() as connection:
        checked = await api_keys.check_api_key(
            connection, key, touch_interval=state.api_key_touch_interval
        )
    if isinstance(checked, KeyRefusal):
        return Authentication(None, checked)
    return Authentication(checked)


async def authenticate(state: AppState, key: str | None) -> Principal | None:
    return (await check_key(state, key)).principal


# Websocket close reasons (at most 123 bytes each, as a close frame allows). None of them
# says whether a workspace or a key prefix exists.
WS_KEY_REFUSALS = {
    KeyRefusal.MISSING: (
        'API key missing: send {"authorization": "Bearer <key>"} in the connection_init payload'
    ),
    KeyRefusal.MALFORMED: "API key malformed: expected inbx_<12-character prefix>_<secret>",
    KeyRefusal.UNKNOWN: "API key not recognised: no such key, or a wrong secret",
    KeyRefusal.REVOKED: "API key revoked: create a new one (inboxd apikey create)",
}
WS_KEY_UNCHECKABLE = "API key could not be checked (database unreachable): retry shortly"


class ConnectionRefused(Exception):
    """A websocket connection_init refused; ``reason`` is the close reason (code 4403)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refuse_connection(authentication: Authentication) -> Principal:
    """The principal, or ConnectionRefused saying what is wrong with the key."""
    if authentication.principal is not None:
        return authentication.principal
    raise ConnectionRefused(WS_KEY_REFUSALS[authentication.refusal or KeyRefusal.MISSING])


def require(principal: Principal | None, permission: Permission) -> Principal:
    if principal is None:
        raise AuthError(
            "UNAUTHENTICATED",
            "A valid API key is required: send 'Authorization: Bearer <key>' or 'X-Api-Key'.",
        )
    if not principal.can(permission):
        raise AuthError("FORBIDDEN", f"This API key lacks the '{permission.value}' permission.")
    return principal
