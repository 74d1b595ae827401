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
Queries only: re-running a query is harmless, re-running a mutation is not. Documents with
directives, abstract types or introspection (other than ``__typename``) are not compiled.
``tests/schema/test_fastpath.py`` checks that both executors answer the same.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Visitor,
    is_abstract_type,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers
from graphql.utilities import get_operation_ast, type_from_ast

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class Fallback(Exception):
    """The compiled plan cannot answer exactly as graphql-core would: run graphql-core."""


@dataclass(slots=True)
class _Run:
    """One execution of a plan."""

    plan: Plan
    context: Any
    variables: VariableValues


# A completer turns a resolved value into its JSON form; it may return an awaitable when the
# value's selection has resolvers that are coroutines.
Completer = Callable[[Any, Path | None, _Run], Any]


@dataclass(slots=True)
class _Completion:
    complete: Completer
    maybe_async: bool
    needs_path: bool


BASIC, RESOLVER, TYPENAME = 0, 1, 2


@dataclass(slots=True)
class _Field:
    key: str
    kind: int
    attr: str
    non_null: bool
    completion: _Completion | None
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


EXACT = {"String": str, "ID": str, "Boolean": bool}


def _leaf(leaf: GraphQLScalarType | GraphQLEnumType, memo: dict[Any, Any]) -> Completer:
    serialize = leaf.serialize

    def general(value: Any, _path: Path | None, _run: _Run) -> Any:
        try:
            result = serialize(value)
        except Exception as exc:
            raise Fallback from exc
        if result is None:
            raise Fallback
        return result

    if isinstance(leaf, GraphQLEnumType):

        def enum(value: Any, path: Path | None, run: _Run) -> Any:
            try:
                return memo[value]
            except (KeyError, TypeError):
                result = general(value, path, run)
                if len(memo) < 256:
                    memo[value] = result
                return result

        return enum
    exact = EXACT.get(leaf.name)
    if exact is not None:
        kind = exact

        def same_type(value: Any, path: Path | None, run: _Run) -> Any:
            return value if type(value) is kind else general(value, path, run)

        return same_type
    if leaf.name == "Int":

        def integer(value: Any, path: Path | None, run: _Run) -> Any:
            if type(value) is int and INT_MIN <= value <= INT_MAX:
                return value
            return general(value, path, run)

        return integer
    if leaf.name == "Float":

        def floating(value: Any, path: Path | None, run: _Run) -> Any:
            if type(value) is float and math.isfinite(value):
                return value
            return general(value, path, run)

        return floating
    return general


class _NotCompilable(Exception):
    pass


class _Compiler:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments
        # One memo per enum type, shared by its completers and the inline shortcut.
        self.enum_memos: dict[str, dict[Any, Any]] = {}

    def memo(self, leaf: GraphQLScalarType | GraphQLEnumType) -> dict[Any, Any]:
        return self.enum_memos.setdefault(leaf.name, {})

    def _applies(self, condition: Any, runtime: GraphQLObjectType) -> bool:
        if condition is None:
            return True
        conditional = type_from_ast(self.schema, condition)
        if conditional is runtime:
            return True
        if conditional is not None and is_abstract_type(conditional):
            return self.schema.is_sub_type(conditional, runtime)
        return False

    def _collect(
        self,
        runtime: GraphQLObjectType,
        selection_set: SelectionSetNode,
        fields: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        # graphql-core's CollectFields without directives (documents with any are refused).
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if self._applies(selection.type_condition, runtime):
                    self._collect(runtime, selection.selection_set, fields, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is None or not self._applies(fragment.type_condition, runtime):
                    continue
                self._collect(runtime, fragment.selection_set, fields, visited)

    def object(
        self, runtime: GraphQLObjectType, selection_sets: list[SelectionSetNode]
    ) -> _Completion:
        grouped: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selection_sets:
            self._collect(runtime, selection_set, grouped, visited)
        fields = [self.field(runtime, key, nodes) for key, nodes in grouped.items()]
        maybe_async = any(
            f.kind == RESOLVER or (f.completion is not None and f.completion.maybe_async)
            for f in fields
        )
        needs_path = any(
            f.kind == RESOLVER or (f.completion is not None and f.completion.needs_path)
            for f in fields
        )
        type_name = runtime.name

        def complete(source: Any, path: Path | None, run: _Run) -> Any:
            return _execute_fields(fields, type_name, source, path, run)

        return _Completion(complete, maybe_async, needs_path)

    def field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> _Field:
        name = nodes[0].name.value
        if name == "__typename":
            return _Field(key, TYPENAME, "", True, None, None, nodes, parent, False)
        if name.startswith("__"):
            raise _NotCompilable(f"introspection field {name}")
        field_def = parent.fields.get(name)
        if field_def is None:
            raise _NotCompilable(f"unknown field {name}")
        definition = (field_def.extensions or {}).get("strawberry-definition")
        basic = (
            getattr(field_def.resolve, "_is_default", False)
            and definition is not None
            and definition.default_resolver is getattr
        )
        completion = self.completion(field_def.type, nodes)
        inner = (
            field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else field_def.type
        )
        return _Field(
            key=key,
            kind=BASIC if basic else RESOLVER,
            attr=definition.python_name if basic and definition is not None else name,
            non_null=isinstance(field_def.type, GraphQLNonNull),
            completion=completion,
            field_def=field_def,
            field_nodes=nodes,
            parent=parent,
            has_arguments=bool(field_def.args),
            exact=EXACT.get(inner.name) if isinstance(inner, GraphQLScalarType) else None,
            memo=self.memo(inner) if isinstance(inner, GraphQLEnumType) else None,
        )

    def completion(self, output: GraphQLOutputType, nodes: list[FieldNode]) -> _Completion:
        if isinstance(output, GraphQLNonNull):
            inner = self.completion(output.of_type, nodes)
            inner_complete = inner.complete

            def non_null(value: Any, path: Path | None, run: _Run) -> Any:
                if value is None:
                    raise Fallback
                return inner_complete(value, path, run)

            return _Completion(non_null, inner.maybe_async, inner.needs_path)
        if isinstance(output, GraphQLList):
            return self.list(output, nodes)
        if isinstance(output, GraphQLScalarType | GraphQLEnumType):
            complete = _leaf(output, self.memo(output))

            def leaf(value: Any, path: Path | None, run: _Run) -> Any:
                return None if value is None else complete(value, path, run)

            return _Completion(leaf, False, False)
        if isinstance(output, GraphQLObjectType):
            obj = self.object(output, [n.selection_set for n in nodes if n.selection_set])
            obj_complete = obj.complete

            def nullable_object(value: Any, path: Path | None, run: _Run) -> Any:
                return None if value is None else obj_complete(value, path, run)

            return _Completion(nullable_object, obj.maybe_async, obj.needs_path)
        raise _NotCompilable(f"abstract or unknown type {output}")

    def list(self, output: GraphQLList[Any], nodes: list[FieldNode]) -> _Completion:
        item = self.completion(output.of_type, nodes)
        item_complete, item_async, item_path = item.complete, item.maybe_async, item.needs_path

        def complete(value: Any, path: Path | None, run: _Run) -> Any:
            if value is None:
                return None
            if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
                raise Fallback
            if item_path:
                items = [item_complete(v, Path(path, i, None), run) for i, v in enumerate(value)]
            else:
                items = [item_complete(v, None, run) for v in value]
            if item_async and any(inspect.isawaitable(i) for i in items):
                return _gather_items(items)
            return items

        return _Completion(complete, item_async, item_path)


async def _gather_items(items: list[Any]) -> list[Any]:
    waiting = [(n, i) for n, i in enumerate(items) if inspect.isawaitable(i)]
    done = await asyncio.gather(*(i for _, i in waiting), return_exceptions=True)
    for (n, _), result in zip(waiting, done, strict=True):
        if isinstance(result, BaseException):
            raise Fallback from result
        items[n] = result
    return items


def _call_resolver(field: _Field, source: Any, path: Path | None, run: _Run) -> Any:
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


def _execute_fields(
    fields: list[_Field], type_name: str, source: Any, path: Path | None, run: _Run
) -> Any:
    out: dict[str, Any] = {}
    pending: list[tuple[_Field, Any, bool]] | None = None
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
    field: _Field, awaitable: Any, resolved: bool, type_name: str, path: Path | None, run: _Run
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
    pending: list[tuple[_Field, Any, bool]],
    type_name: str,
    path: Path | None,
    run: _Run,
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


class _HasDirective(Visitor):
    found = False

    def enter_directive(self, *_args: Any) -> None:
        self.found = True


@dataclass(slots=True)
class Plan:
    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    root: _Completion

    async def execute(self, context: Any, variables: VariableValues) -> dict[str, Any]:
        """The ``data`` of the response, or ``Fallback``."""
        try:
            data = self.root.complete(None, None, _Run(self, context, variables))
            if inspect.isawaitable(data):
                data = await data
        except Fallback:
            raise
        except Exception as exc:  # e.g. a row without an attribute the type declares
            raise Fallback from exc
        return data  # type: ignore[no-any-return]


def compile_plan(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Plan | None:
    """A plan for a *validated* document's query operation, or None if it is not a candidate."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        return None
    finder = _HasDirective()
    visit(document, finder)
    if finder.found:
        return None
    root = schema.query_type
    if root is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    compiler = _Compiler(schema, fragments)
    try:
        completion = compiler.object(root, [operation.selection_set])
    except _NotCompilable:
        return None
    return Plan(schema, document, operation, fragments, completion)
