"""Input objects built from a plan made once per type, through Strawberry's own seam for it
(``StrawberryObjectDefinition.from_input``).

Strawberry converts an input object field by field on every request, resolving each field's
annotation again each time: for ``sendEmail``'s ``SendEmailInput`` that was about a tenth of
the mutation's CPU. ``build_from_plan`` makes the same object: the same defaults (None for a
field without one), each scalar value as given, each list of scalars copied as Strawberry
copies it, and every other field (nested inputs, enums, GlobalIDs, ``Maybe``) converted by
Strawberry itself (``InputContext.convert``). ``tests/schema/test_input_builder.py`` holds it to
Strawberry's own conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    StrawberryType,
    get_object_definition,
)
from strawberry.types.unset import UNSET

_AS_GIVEN, _LIST_COPY, _STRAWBERRY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    graphql_name: str
    python_name: str
    how: int
    type_: StrawberryType | type


@dataclass(frozen=True, slots=True)
class _TypePlan:
    defaults: dict[str, None]
    fields: tuple[_FieldPlan, ...]


def _scalar(type_: Any, registry: Mapping[object, Any]) -> bool:
    return type_ is not GlobalID and is_scalar(type_, registry)


def _how(type_: Any, registry: Mapping[object, Any]) -> int:
    """How ``convert_argument`` treats a value of ``type_``, where it is this simple."""
    while isinstance(type_, StrawberryOptional):
        if isinstance(type_, StrawberryMaybe):
            return _STRAWBERRY  # wrapped in Some(...)
        type_ = type_.of_type
    if _scalar(type_, registry):
        return _AS_GIVEN
    if isinstance(type_, StrawberryList):
        item = type_.of_type
        if isinstance(item, StrawberryOptional) and not isinstance(item, StrawberryMaybe):
            item = item.of_type
        if _scalar(item, registry):
            return _LIST_COPY
    return _STRAWBERRY


def _plan(type_: type, context: InputContext) -> _TypePlan:
    definition = get_object_definition(type_, strict=True)
    fields = tuple(
        _FieldPlan(
            context.config.name_converter.from_field(field),
            field.python_name,
            _how(resolved, context.scalar_registry),
            resolved,
        )
        for field in definition.fields
        for resolved in (field.resolve_type(type_definition=definition),)
    )
    defaults = {
        field.python_name: None
        for field in definition.fields
        if field.default_value is MISSING and field.default_factory is MISSING
    }
    return _TypePlan(defaults, fields)


# One plan per (input class, Strawberry config, scalar registry): a process has one schema,
# tests build several. The config and registry are kept alive with their plans.
_PLANS: dict[tuple[type, int, int], tuple[_TypePlan, object, object]] = {}


def build_from_plan(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
    """``type_`` built from its GraphQL input ``value``, as Strawberry builds it."""
    key = (type_, id(context.config), id(context.scalar_registry))
    known = _PLANS.get(key)
    if known is None or known[1] is not context.config or known[2] is not context.scalar_registry:
        known = _PLANS[key] = (_plan(type_, context), context.config, context.scalar_registry)
    plan = known[0]
    kwargs: dict[str, Any] = dict(plan.defaults)
    for field in plan.fields:
        if field.graphql_name not in value:
            continue
        given = value[field.graphql_name]
        if field.how == _AS_GIVEN:
            kwargs[field.python_name] = given
        elif field.how == _LIST_COPY:
            # Copied: graphql-core hands every request the same default list.
            kwargs[field.python_name] = given if given is None or given is UNSET else list(given)
        else:
            kwargs[field.python_name] = context.convert(given, field.type_, field.graphql_name)
    return type_(**kwargs)


def build_inputs_from_plans(*types: type) -> None:
    """Have Strawberry build these input classes with ``build_from_plan``. Not for a type
    with a ``Maybe`` field: Strawberry skips its null check for a type that builds itself."""
    for type_ in types:
        definition = get_object_definition(type_, strict=True)
        if not definition.is_input:
            raise TypeError(f"{definition.name} is not an input type")
        if any(isinstance(f.type, StrawberryMaybe) for f in definition.fields):
            raise TypeError(f"{definition.name} has a Maybe field")
        definition.from_input = build_from_plan
