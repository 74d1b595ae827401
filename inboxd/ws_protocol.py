"""graphql-transport-ws's vocabulary: the subprotocol name, the errors that close a socket
and the connections the key sweeper can close (PROTOCOL.md of graphql-ws)."""

from __future__ import annotations

import orjson
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.schema.exceptions import CannotGetOperationTypeError

PROTOCOL = "graphql-transport-ws"
LIMIT_REACHED = orjson.dumps([GraphQLError("Subscription limit reached").formatted]).decode()


class Closable:
    """A connection the key sweeper can close."""

    __slots__ = ()

    def close(self, code: int, reason: str) -> None:
        raise NotImplementedError


class ProtocolError(Exception):
    """The client broke the protocol: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_reason(error: GraphQLError) -> str | None:
    """Errors Strawberry answers by closing the socket (4400) instead of an ``error``."""
    if isinstance(error, GraphQLSyntaxError):
        return error.message
    if isinstance(error.original_error, CannotGetOperationTypeError):
        return error.original_error.as_http_error_reason()
    return None
