"""Cross-cutting GraphQL behaviour: limits on what a document may ask, and error masking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from storage.db import UNAVAILABLE_ERRORS

log = structlog.get_logger("inboxd.graphql")

__all__ = ["UNAVAILABLE_ERRORS", "Limits", "limit_rules", "mask_error", "schema_extensions"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    introspection: bool = True


def is_unexpected(error: GraphQLError) -> bool:
    """Errors we raised on purpose carry no original error (or a GraphQLError); the rest are
    bugs or outages, and their text (SQL, paths, values) must not reach the client."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def mask_error(error: GraphQLError, request_id: str) -> GraphQLError:
    """``error`` as the client may see it: unexpected ones are logged with the request id
    and replaced by that id, or by SERVICE_UNAVAILABLE when the database cannot be reached."""
    if not is_unexpected(error):
        return error
    original = error.original_error
    if isinstance(original, UNAVAILABLE_ERRORS):
        log.warning("database unavailable", request_id=request_id, error=type(original).__name__)
        return GraphQLError(
            "The service is temporarily unavailable (database unreachable); retry shortly.",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "SERVICE_UNAVAILABLE", "requestId": request_id},
        )
    log.error(
        "unexpected error",
        request_id=request_id,
        path=list(error.path or []),
        exc_info=original,
    )
    return GraphQLError(
        f"Unexpected error (request id {request_id}).",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


class MaskUnexpectedErrors(MaskErrors):
    """Strawberry's error masking, with ``mask_error``'s rules."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = getattr(self.execution_context, "context", None)
        return mask_error(error, getattr(context, "request_id", None) or "unknown")


def limit_rules(limits: Limits) -> list[type[ASTValidationRule]]:
    """Validation rules beyond the specification's, shared by Strawberry's validation and the
    compiled fast path (``schema.fastpath``), so both accept the same documents."""
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules


def schema_extensions(limits: Limits) -> list[Callable[[], SchemaExtension]]:
    # The limiters' rule classes are built once: built per request (as their constructors
    # do), each request would bring new rules and the validation cache would never hit.
    rules = limit_rules(limits)
    extensions: list[Callable[[], SchemaExtension]] = [
        # Parsing and validating the same document on every request costs most of a small
        # request's time; both caches are keyed by the document text and bounded.
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules(rules),
        MaskUnexpectedErrors,
    ]
    return extensions
