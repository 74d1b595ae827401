"""The GraphQL contract."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter

from schema.extensions import Limits, schema_extensions
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription


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


def build_schema(limits: Limits | None = None) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # No "did you mean" hints: they map the schema for whoever probes it.
        config=StrawberryConfig(
            auto_camel_case=True,
            disable_field_suggestions=True,
            name_converter=CachedNameConverter(),
        ),
        extensions=schema_extensions(limits or Limits()),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
