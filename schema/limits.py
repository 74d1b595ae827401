"""What a document may ask for: depth, aliases, repeats, tokens and introspection, in linear time.

Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk every fragment spread anew, so
a chain of fragments that each spread the previous one twice (``fragment F1 on Viewer {...F0
...F0}`` ... ``F40``) costs 2^40 steps: one ~1 KB request froze the process before its API key
was even looked at. ``DocumentLimitsRule`` computes the same two numbers with one visit per
fragment (memoised), and the same messages, so it runs first and the rest of validation only
sees documents of bounded size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2_000
    # How often one response path may occur once same-named fields merge (fragments
    # expanded): the specification's check that fields can merge compares those pairwise
    # (1,900 repeats of a field: 0.1 s of validation; 30 fields 30 times: 80 ms).
    max_repeats: int = 20
    introspection: bool = True


@dataclass(slots=True)
class _Measure:
    """A selection set's levels of nested fields, the aliases in it, and how often each
    response path occurs in it once fields of the same name are merged (spreads included)."""

    levels: int
    aliases: int
    paths: Counter[tuple[str, ...]] = field(default_factory=Counter)


class _TooMany(Exception):
    def __init__(self, path: tuple[str, ...], count: int) -> None:
        super().__init__(path, count)
        self.path = path
        self.count = count


class _Measurer:
    def __init__(self, document: DocumentNode, max_repeats: int) -> None:
        self.max_repeats = max_repeats
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.memo: dict[str, _Measure] = {}
        # Fragments being measured: a cycle (reported by NoFragmentCyclesRule) adds nothing.
        self.open: set[str] = set()

    def fragment(self, name: str) -> _Measure:
        known = self.memo.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self.open:
            return _Measure(0, 0)
        self.open.add(name)
        try:
            measure = self.selection_set(definition.selection_set)
        finally:
            self.open.discard(name)
        self.memo[name] = measure
        return measure

    def selection_set(self, selection_set: SelectionSetNode) -> _Measure:
        # Recursive over nesting (bounded by the token limit, as the parser's own recursion
        # is), memoised over fragments: each fragment's body is measured once. Counting stops
        # at the first path over the limit, so the counts never grow past it.
        result = _Measure(0, 0)
        paths = result.paths
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = ((selection.alias or selection.name).value,)
                self._add(paths, key, 1)
                result.aliases += 1 if selection.alias else 0
                if selection.selection_set is None:
                    result.levels = max(result.levels, 1)
                    continue
                inner = self.selection_set(selection.selection_set)
                # Introspection fields do not count towards the depth, as in Strawberry.
                levels = 0 if selection.name.value.startswith("__") else inner.levels
                result.levels = max(result.levels, 1 + levels)
                result.aliases += inner.aliases
                for path, count in inner.paths.items():
                    self._add(paths, key + path, count)
            else:
                if isinstance(selection, InlineFragmentNode):
                    inner = self.selection_set(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    inner = self.fragment(selection.name.value)
                else:
                    continue
                # A fragment's fields join this selection set.
                result.levels = max(result.levels, inner.levels)
                result.aliases += inner.aliases
                for path, count in inner.paths.items():
                    self._add(paths, path, count)
        return result

    def _add(self, paths: Counter[tuple[str, ...]], path: tuple[str, ...], count: int) -> None:
        total = paths[path] + count
        if total > self.max_repeats:
            raise _TooMany(path, total)
        paths[path] = total


def _operations(document: DocumentNode) -> Iterator[OperationDefinitionNode]:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            yield definition


def limit_rule(limits: Limits) -> type[ASTValidationRule]:
    """The depth and alias limits as one validation rule, linear in the document's size."""

    class DocumentLimitsRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            measurer = _Measurer(context.document, limits.max_repeats)
            aliases = 0
            for operation in _operations(context.document):
                try:
                    measure = measurer.selection_set(operation.selection_set)
                except _TooMany as exc:
                    name = operation.name.value if operation.name else "anonymous"
                    context.report_error(
                        GraphQLError(
                            f"'{name}' asks for {'.'.join(exc.path)} more than "
                            f"{limits.max_repeats} times (fragments included): merge them",
                            operation,
                        )
                    )
                    return
                aliases += measure.aliases
                # ``levels`` counts the fields on the deepest path; the depth of its last field
                # is one less (a top-level field is at depth 0).
                if measure.levels - 1 > limits.max_depth:
                    name = operation.name.value if operation.name else "anonymous"
                    context.report_error(
                        GraphQLError(
                            f"'{name}' exceeds maximum operation depth of {limits.max_depth}",
                            operation,
                        )
                    )
            if aliases > limits.max_aliases:
                context.report_error(
                    GraphQLError(f"{aliases} aliases found. Allowed: {limits.max_aliases}")
                )

    return DocumentLimitsRule


def limit_rules(limits: Limits) -> list[type[ASTValidationRule]]:
    """Validation rules beyond the specification's, run before them."""
    rules: list[type[ASTValidationRule]] = [limit_rule(limits)]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules
