"""The GraphQL contract, and the one pipeline every operation runs through (``schema.pipeline``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSchema
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from schema.documents import Documents
from schema.limits import Limits
from schema.mutation import Mutation
from schema.pipeline import Pipeline, plan_scope, planned
from schema.query import Query
from schema.subscription import Subscription

__all__ = ["InboxdSchema", "Limits", "build_schema", "export_sdl"]

ALL_OPERATIONS = frozenset(OperationType)


class CachedNameConverter(NameConverter):
    """Strawberry converts every input field's name on every request (to_camel_case of the same
    few dozen names, ~30 per createEmailInbox); the answers never change, so remember them."""

    def __init__(self, auto_camel_case: bool = True) -> None:
        super().__init__(auto_camel_case)
        self._names: dict[tuple[bool, str], str] = {}

    def apply_naming_config(self, name: str) -> str:
        key = (self.auto_camel_case, name)
        converted = self._names.get(key)
        if converted is None:
            converted = self._names[key] = super().apply_naming_config(name)
        return converted


class InboxdSchema(strawberry.Schema):
    """Strawberry's schema with inboxd's pipeline. ``graphql_schema`` is the one place that
    reaches Strawberry's graphql-core schema (``_schema``: Strawberry has no public seam)."""

    def __init__(
        self,
        limits: Limits,
        *,
        compile_queries: bool = True,
        plan_shortcut: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(extensions=[lambda: Pipeline(self.documents)], **kwargs)
        self.limits = limits
        self.plan_shortcut = plan_shortcut
        self.documents = Documents(self.graphql_schema(), limits, compile_queries=compile_queries)

    def graphql_schema(self) -> GraphQLSchema:
        return self._schema

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Strawberry's ``execute``, with a cached compiled query answered by its plan first
        (``schema.pipeline.planned``: same document cache, rules and masking)."""
        with plan_scope():
            if root_value is None and self.plan_shortcut:
                result = await planned(
                    self.documents,
                    query,
                    variable_values,
                    context_value,
                    operation_name,
                    allowed_operation_types or ALL_OPERATIONS,
                    self.execution_context_class,
                )
                if result is not None:
                    return ExecutionResult(data=result.data, errors=result.errors)
            return await super().execute(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                allowed_operation_types,
                operation_extensions,
            )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error, the client's mistakes included; inboxd logs the
        # unexpected ones once, with the request id, where they are masked.
        return None


def build_schema(
    limits: Limits | None = None, *, compile_queries: bool = True, plan_shortcut: bool = True
) -> InboxdSchema:
    return InboxdSchema(
        limits or Limits(),
        compile_queries=compile_queries,
        plan_shortcut=plan_shortcut,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # No "did you mean" hints: they map the schema for whoever probes it.
        config=StrawberryConfig(
            auto_camel_case=True,
            disable_field_suggestions=True,
            name_converter=CachedNameConverter(),
        ),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
