"""Compiling a validated query document into a plan (``schema.fastpath.Plan``): which attribute
to read for each field, how to serialise each leaf, where a real resolver must run. Documents
with directives, abstract types or introspection (other than ``__typename``) are not compiled.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    Visitor,
    is_abstract_type,
    visit,
)
from graphql.pyutils import Path
from graphql.utilities import get_operation_ast, type_from_ast

from schema.fastpath import (
    BASIC,
    RESOLVER,
    TYPENAME,
    Completer,
    Completion,
    Fallback,
    FieldPlan,
    Plan,
    Run,
    execute_fields,
    gather_items,
)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
EXACT = {"String": str, "ID": str, "Boolean": bool}


def _leaf(leaf: GraphQLScalarType | GraphQLEnumType, memo: dict[Any, Any]) -> Completer:
    serialize = leaf.serialize

    def general(value: Any, _path: Path | None, _run: Run) -> Any:
        try:
            result = serialize(value)
        except Exception as exc:
            raise Fallback from exc
        if result is None:
            raise Fallback
        return result

    if isinstance(leaf, GraphQLEnumType):

        def enum(value: Any, path: Path | None, run: Run) -> Any:
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

        def same_type(value: Any, path: Path | None, run: Run) -> Any:
            return value if type(value) is kind else general(value, path, run)

        return same_type
    if leaf.name == "Int":

        def integer(value: Any, path: Path | None, run: Run) -> Any:
            if type(value) is int and INT_MIN <= value <= INT_MAX:
                return value
            return general(value, path, run)

        return integer
    if leaf.name == "Float":

        def floating(value: Any, path: Path | None, run: Run) -> Any:
            if type(value) is float and math.isfinite(value):
                return value
            return general(value, path, run)

        return floating
    return general


class _NotCompilable(Exception):
    pass


class _Compiler:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        *,
        unions: bool = False,
    ):
        self.schema = schema
        self.fragments = fragments
        # A mutation's payload is a union of its success and its errors (see compile_plan).
        self.unions = unions
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
    ) -> Completion:
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

        def complete(source: Any, path: Path | None, run: Run) -> Any:
            return execute_fields(fields, type_name, source, path, run)

        return Completion(complete, maybe_async, needs_path)

    def field(self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode]) -> FieldPlan:
        name = nodes[0].name.value
        if name == "__typename":
            return FieldPlan(key, TYPENAME, "", True, None, None, nodes, parent, False)
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
        return FieldPlan(
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

    def completion(self, output: GraphQLOutputType, nodes: list[FieldNode]) -> Completion:
        if isinstance(output, GraphQLNonNull):
            inner = self.completion(output.of_type, nodes)
            inner_complete = inner.complete

            def non_null(value: Any, path: Path | None, run: Run) -> Any:
                if value is None:
                    raise Fallback
                return inner_complete(value, path, run)

            return Completion(non_null, inner.maybe_async, inner.needs_path)
        if isinstance(output, GraphQLList):
            return self.list(output, nodes)
        if isinstance(output, GraphQLScalarType | GraphQLEnumType):
            complete = _leaf(output, self.memo(output))

            def leaf(value: Any, path: Path | None, run: Run) -> Any:
                return None if value is None else complete(value, path, run)

            return Completion(leaf, False, False)
        if isinstance(output, GraphQLObjectType):
            obj = self.object(output, [n.selection_set for n in nodes if n.selection_set])
            obj_complete = obj.complete

            def nullable_object(value: Any, path: Path | None, run: Run) -> Any:
                return None if value is None else obj_complete(value, path, run)

            return Completion(nullable_object, obj.maybe_async, obj.needs_path)
        if self.unions and isinstance(output, GraphQLUnionType):
            return self.union(output, nodes)
        raise _NotCompilable(f"abstract or unknown type {output}")

    def union(self, output: GraphQLUnionType, nodes: list[FieldNode]) -> Completion:
        """A member's plan chosen by the value's class, as Strawberry's resolve_type does
        for its object types; a value of any other class is graphql-core's to judge."""
        by_class: dict[type, Completion] = {}
        for member in self.schema.get_possible_types(output):
            definition = (member.extensions or {}).get("strawberry-definition")
            origin = getattr(definition, "origin", None)
            if not isinstance(origin, type) or getattr(definition, "is_graphql_generic", True):
                raise _NotCompilable(f"union member {member.name}")
            by_class[origin] = self.object(
                member, [n.selection_set for n in nodes if n.selection_set]
            )
        maybe_async = any(c.maybe_async for c in by_class.values())
        needs_path = any(c.needs_path for c in by_class.values())

        def complete(value: Any, path: Path | None, run: Run) -> Any:
            if value is None:
                return None
            completion = by_class.get(type(value))
            if completion is None:
                raise Fallback
            return completion.complete(value, path, run)

        return Completion(complete, maybe_async, needs_path)

    def list(self, output: GraphQLList[Any], nodes: list[FieldNode]) -> Completion:
        item = self.completion(output.of_type, nodes)
        item_complete, item_async, item_path = item.complete, item.maybe_async, item.needs_path

        def complete(value: Any, path: Path | None, run: Run) -> Any:
            if value is None:
                return None
            if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
                raise Fallback
            if item_path:
                items = [item_complete(v, Path(path, i, None), run) for i, v in enumerate(value)]
            else:
                items = [item_complete(v, None, run) for v in value]
            if item_async and any(inspect.isawaitable(i) for i in items):
                return gather_items(items)
            return items

        return Completion(complete, item_async, item_path)


class _HasDirective(Visitor):
    found = False

    def enter_directive(self, *_args: Any) -> None:
        self.found = True


def compile_plan(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Plan | None:
    """A plan for a *validated* document's query operation, or for a mutation of one root
    field (``Plan.root_field``: resolved once, never again), or None if it is not a candidate."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    selections = operation.selection_set.selections
    if operation.operation is OperationType.QUERY:
        root = schema.query_type
    elif (
        operation.operation is OperationType.MUTATION
        and len(selections) == 1
        and isinstance(selections[0], FieldNode)
    ):
        root = schema.mutation_type
    else:
        return None
    finder = _HasDirective()
    visit(document, finder)
    if finder.found or root is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    mutation = operation.operation is OperationType.MUTATION
    compiler = _Compiler(schema, fragments, unions=mutation)
    try:
        completion = compiler.object(root, [operation.selection_set])
        root_field = None
        if mutation:
            node = selections[0]
            assert isinstance(node, FieldNode)
            key = node.alias.value if node.alias else node.name.value
            root_field = compiler.field(root, key, [node])
            if root_field.kind != RESOLVER:
                return None
    except _NotCompilable:
        return None
    return Plan(schema, document, operation, fragments, completion, root_field)
