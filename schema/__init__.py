"""The GraphQL contract."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from schema.extensions import Limits, schema_extensions
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription


def build_schema(limits: Limits | None = None) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # No "did you mean" hints: they map the schema for whoever probes it.
        config=StrawberryConfig(auto_camel_case=True, disable_field_suggestions=True),
        extensions=schema_extensions(limits or Limits()),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
