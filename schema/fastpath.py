"""Compiled execution of read-only queries: graphql-core's happy path, without its per-field cost.

graphql-core's executor spends a few microseconds on every field: resolve info, a path
object, resolver dispatch, completion by type. For a list of 50 inboxes that is most of the
request. A query document that passed validation is compiled once (per document text and
operation name) into a tree of plans: which attribute to read for each field, how to
serialise each leaf, where a real resolver must run. Executing a plan reads attributes and
builds the response dict directly.

Only the happy path is compiled. Anything that would make graphql-core do more than
"resolve and serialise" (a resolver error, a null in a non-null field, a value a scalar
rejects) raises ``Fallback``, and the pipeline (``schema.pipeline``) lets graphql-core run the
same request, whose answer (with its errors, masking and partial data) is then the answer.
Plans are compiled from documents ``schema.documents`` parsed and validated, and cached there.
Re-running a query is harmless, re-running a mutation is not: a mutation of one root field
is compiled too, but its resolver runs once (``Plan.resolve_once``), and when the plan cannot
complete its value, graphql-core completes that same value (``schema.pipeline``), never
resolving it again. Documents with directives, abstract types (but a mutation's payload
union) or introspection (other than ``__typename``) are not compiled.
``tests/schema/test_fastpath.py`` checks that both executors answer the same.

This module runs plans; ``schema.fastpath_compile`` builds them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
)
from graphql.execution.values import VariableValues, get_argument_values
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers


class Fallback(Exception):
    """The compiled plan cannot answer exactly as graphql-core would: run graphql-core."""


@dataclass(slots=True)
class Run:
    """One execution of a plan."""

    plan: Plan
    context: Any
    variables: VariableValues


# A completer turns a resolved value into its JSON form; it may return an awaitable when the
# value's selection has resolvers that are coroutines.
Completer = Callable[[Any, Path | None, Run], Any]


@dataclass(slots=True)
class Completion:
    complete: Completer
    maybe_async: bool
    needs_path: bool


BASIC, RESOLVER, TYPENAME = 0, 1, 2


@dataclass(slots=True)
class FieldPlan:
    key: str
    kind: int
    attr: str
    non_null: bool
    completion: Completion | None
    field_def: GraphQLField | None
    field_nodes: list[FieldNode]
    parent: GraphQLObjectType
    has_arguments: bool
    # Shortcuts for the commonest leaves, taken inline: the Python type that a String, ID or
    # Boolean value passes through as, and an enum's memo of serialised names.
    exact: type | None = None
    memo: dict[Any, Any] | None = None


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return inspect.isawaitable(value)


def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
    return asyncio.gather(*values)


def _track(_values: Sequence[Any]) -> None:
    # Resolvers here do not register background work; graphql-core's fallback would.
    return None


HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_track)


async def gather_items(items: list[Any]) -> list[Any]:
    waiting = [(n, i) for n, i in enumerate(items) if inspect.isawaitable(i)]
    done = await asyncio.gather(*(i for _, i in waiting), return_exceptions=True)
    for (n, _), result in zip(waiting, done, strict=True):
        if isinstance(result, BaseException):
            raise Fallback from result
        items[n] = result
    return items


def _call_resolver(field: FieldPlan, source: Any, path: Path | None, run: Run) -> Any:
    field_def = field.field_def
    assert field_def is not None and field_def.resolve is not None
    arguments = (
        get_argument_values(field_def, field.field_nodes[0], run.variables)
        if field.has_arguments
        else {}
    )
    plan = run.plan
    info = GraphQLResolveInfo(
        field.field_nodes[0].name.value,
        field.field_nodes,
        field_def.type,
        field.parent,
        Path(path, field.key, field.parent.name),
        plan.schema,
        plan.fragments,
        None,
        plan.operation,
        run.variables,
        run.context,
        _is_awaitable,
        None,
        HELPERS,
    )
    return field_def.resolve(source, info, **arguments)


def execute_fields(
    fields: list[FieldPlan], type_name: str, source: Any, path: Path | None, run: Run
) -> Any:
    out: dict[str, Any] = {}
    pending: list[tuple[FieldPlan, Any, bool]] | None = None
    for field in fields:
        kind = field.kind
        if kind == BASIC:
            value = getattr(source, field.attr)
            if field.exact is not None and type(value) is field.exact:
                out[field.key] = value
                continue
            if field.memo is not None:
                try:
                    name = field.memo.get(value)
                except TypeError:  # unhashable: not an enum value; the completer decides
                    name = None
                if name is not None:
                    out[field.key] = name
                    continue
        elif kind == TYPENAME:
            out[field.key] = type_name
            continue
        else:
            try:
                value = _call_resolver(field, source, path, run)
            except Exception as exc:
                raise Fallback from exc
            if inspect.isawaitable(value):
                out[field.key] = None
                if pending is None:
                    pending = []
                pending.append((field, value, True))
                continue
        completion = field.completion
        assert completion is not None
        if value is None:
            if field.non_null:
                raise Fallback
            out[field.key] = None
            continue
        child = Path(path, field.key, type_name) if completion.needs_path else None
        result = completion.complete(value, child, run)
        if completion.maybe_async and inspect.isawaitable(result):
            out[field.key] = None
            if pending is None:
                pending = []
            pending.append((field, result, False))
            continue
        out[field.key] = result
    if pending:
        return _settle(out, pending, type_name, path, run)
    return out


async def _finish(
    field: FieldPlan, awaitable: Any, resolved: bool, type_name: str, path: Path | None, run: Run
) -> Any:
    value = await awaitable
    if not resolved:
        return value  # already completed
    if value is None:
        if field.non_null:
            raise Fallback
        return None
    completion = field.completion
    assert completion is not None
    child = Path(path, field.key, type_name) if completion.needs_path else None
    result = completion.complete(value, child, run)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _settle(
    out: dict[str, Any],
    pending: list[tuple[FieldPlan, Any, bool]],
    type_name: str,
    path: Path | None,
    run: Run,
) -> dict[str, Any]:
    done = await asyncio.gather(
        *(_finish(f, a, r, type_name, path, run) for f, a, r in pending), return_exceptions=True
    )
    for (field, _, _), result in zip(pending, done, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, Fallback):
                raise result
            raise Fallback from result
        out[field.key] = result
    return out


@dataclass(slots=True)
class Plan:
    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    root: Completion
    # A mutation's one root field: its resolver runs once (``resolve_once``) and whatever
    # the plan cannot complete, graphql-core completes from the same value (schema.pipeline).
    root_field: FieldPlan | None = None

    async def resolve_once(self, context: Any, variables: VariableValues) -> Any:
        """The mutation's root value, resolved by its resolver; its exception, raised."""
        assert self.root_field is not None
        value = _call_resolver(self.root_field, None, None, Run(self, context, variables))
        if inspect.isawaitable(value):
            value = await value
        return value

    async def complete_root(
        self, value: Any, context: Any, variables: VariableValues
    ) -> dict[str, Any]:
        """The ``data`` for the mutation's resolved root ``value``, or ``Fallback``."""
        field = self.root_field
        assert field is not None and field.completion is not None
        if value is None:
            raise Fallback
        run = Run(self, context, variables)
        path = Path(None, field.key, field.parent.name) if field.completion.needs_path else None
        try:
            data = field.completion.complete(value, path, run)
            if inspect.isawaitable(data):
                data = await data
        except Fallback:
            raise
        except Exception as exc:
            raise Fallback from exc
        return {field.key: data}

    async def execute(self, context: Any, variables: VariableValues) -> dict[str, Any]:
        """The ``data`` of the response, or ``Fallback``."""
        try:
            data = self.root.complete(None, None, Run(self, context, variables))
            if inspect.isawaitable(data):
                data = await data
        except Fallback:
            raise
        except Exception as exc:  # e.g. a row without an attribute the type declares
            raise Fallback from exc
        return data  # type: ignore[no-any-return]
