"""What a document may ask for: depth, aliases, tokens and introspection, checked in linear time.

Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk every fragment spread anew, so
a chain of fragments that each spread the previous one twice (``fragment F1 on Viewer {...F0
...F0}`` ... ``F40``) costs 2^40 steps: one ~1 KB request froze the process before its API key
was even looked at. ``DocumentLimitsRule`` computes the same two numbers with one visit per
fragment (memoised), and the same messages, so it runs first and the rest of validation only
sees documents of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
    introspection: bool = True


@dataclass(slots=True)
class _Measure:
    """A selection set's levels of nested fields, and the aliases in it (spreads included)."""

    levels: int
    aliases: int


class _Measurer:
    def __init__(self, document: DocumentNode) -> None:
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
        # is), memoised over fragments: each fragment's body is measured once.
        result = _Measure(0, 0)
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                inner = _Measure(0, 0)
                # Introspection fields do not count towards the depth, as in Strawberry.
                if selection.selection_set is not None:
                    inner = self.selection_set(selection.selection_set)
                    if selection.name.value.startswith("__"):
                        inner = _Measure(0, inner.aliases)
                result.levels = max(result.levels, 1 + inner.levels)
                result.aliases += inner.aliases + (1 if selection.alias else 0)
            elif isinstance(selection, InlineFragmentNode):
                inner = self.selection_set(selection.selection_set)
                result.levels = max(result.levels, inner.levels)
                result.aliases += inner.aliases
            elif isinstance(selection, FragmentSpreadNode):
                inner = self.fragment(selection.name.value)
                result.levels = max(result.levels, inner.levels)
                result.aliases += inner.aliases
        return result


def _operations(document: DocumentNode) -> Iterator[OperationDefinitionNode]:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            yield definition


def limit_rule(limits: Limits) -> type[ASTValidationRule]:
    """The depth and alias limits as one validation rule, linear in the document's size."""

    class DocumentLimitsRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            measurer = _Measurer(context.document)
            aliases = 0
            for operation in _operations(context.document):
                measure = measurer.selection_set(operation.selection_set)
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
