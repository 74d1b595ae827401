"""The one cache of GraphQL documents: parsed, limited and validated once per text.

Every operation, over HTTP or a websocket, finds its document here (``schema.pipeline`` plugs
it into Strawberry's ``on_parse`` and ``on_validate``). A document is checked in this order:
the token limit while parsing, then ``schema.limits`` (depth, aliases, introspection: linear in
the document's size), and only a document within those limits meets the specification's rules.
Its errors are stored as the client will see them: no "did you mean" hints, no input value
echoed back (a misspelled field of an input object would otherwise quote the whole object,
password included).

A document not seen before is built on a worker thread, so a large one never holds the event
loop; callers wanting the same new text share one build.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.validation import ASTValidationRule
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from schema.fastpath import Plan
from schema.fastpath_compile import compile_plan
from schema.limits import Limits, limit_rules

# Parts of graphql-core's messages that quote the client's input back.
_ECHOES = (
    # "Expected value of type 'X' ..., found: { host: "a", password: "secret123" }."
    (re.compile(r",? found:? .*$", re.S), "."),
    # "String cannot represent a non string value: 12345"
    (re.compile(r"(cannot represent[^:]*?value): .*$", re.S), r"\1."),
)
_SUGGESTION = re.compile(r"\s*Did you mean .*$", re.S)


def without_input(message: str) -> str:
    """``message`` with any quoted input value and any suggestion removed."""
    message = _SUGGESTION.sub("", message)
    for pattern, replacement in _ECHOES:
        message = pattern.sub(replacement, message)
    return message.replace("..", ".")


def public_error(error: GraphQLError) -> GraphQLError:
    """A document or variables error as the client may see it."""
    if isinstance(error, GraphQLSyntaxError):
        return error  # it names a position in the document, never an input value
    message = without_input(error.message)
    if message == error.message:
        return error
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
    )


@dataclass(slots=True, eq=False)
class Document:
    """A document text, parsed (``node``) and checked (``errors``, empty when valid)."""

    query: str
    node: DocumentNode | None
    errors: Sequence[GraphQLError]
    # Per operation name: the operation and its compiled plan (None: not compiled).
    operations: dict[str | None, tuple[OperationDefinitionNode | None, Plan | None]] = field(
        default_factory=dict
    )

    @property
    def valid(self) -> bool:
        return self.node is not None and not self.errors


class Documents:
    """Documents by text, bounded (the oldest entry leaves first)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: Limits,
        *,
        compile_queries: bool = True,
        maxsize: int = 512,
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.compile_queries = compile_queries
        self.maxsize = maxsize
        self._limit_rules = limit_rules(limits)
        self._rules: list[type[ASTValidationRule]] = [
            *specified_rules,
            MaybeNullValidationRule,
            OneOfInputValidationRule,
        ]
        self._documents: dict[str, Document] = {}
        self._building: dict[str, asyncio.Future[Document]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def get(self, query: str) -> Document | None:
        return self._documents.get(query)

    def document(self, query: str) -> Document:
        """The document for ``query``, built here and now if new (on the calling thread)."""
        document = self._documents.get(query)
        if document is None:
            document = self._remember(self.build(query))
        return document

    async def prepare(self, query: str) -> Document:
        """The document for ``query``; a new one is built on a worker thread."""
        document = self._documents.get(query)
        if document is not None:
            return document
        building = self._building.get(query)
        if building is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="inboxd-documents")
            loop = asyncio.get_running_loop()
            building = loop.run_in_executor(self._executor, self.build, query)
            self._building[query] = building
            building.add_done_callback(lambda done: self._built(query, done))
        # Shielded: a caller that leaves (a cancelled request) must not cancel the build that
        # others wait for.
        return await asyncio.shield(building)

    def _built(self, query: str, done: asyncio.Future[Document]) -> None:
        self._building.pop(query, None)
        if not done.cancelled() and done.exception() is None:
            self._remember(done.result())

    def _remember(self, document: Document) -> Document:
        known = self._documents.get(document.query)
        if known is not None:
            return known
        if len(self._documents) >= self.maxsize:
            del self._documents[next(iter(self._documents))]
        self._documents[document.query] = document
        return document

    def build(self, query: str) -> Document:
        try:
            node = parse(query, max_tokens=self.limits.max_tokens)
        except GraphQLError as exc:
            return Document(query, None, [public_error(exc)])
        errors = validate(self.schema, node, self._limit_rules, hide_suggestions=True)
        if not errors:
            errors = validate(self.schema, node, self._rules, hide_suggestions=True)
        return Document(query, node, [public_error(e) for e in errors])

    def operation(
        self, document: Document, operation_name: str | None
    ) -> tuple[OperationDefinitionNode | None, Plan | None]:
        """The operation a request runs, and its compiled plan if it is a compiled query."""
        known = document.operations.get(operation_name)
        if known is not None:
            return known
        assert document.node is not None
        operation = get_operation_ast(document.node, operation_name)
        plan = None
        if operation is not None and self.compile_queries and document.valid:
            plan = compile_plan(self.schema, document.node, operation_name)
        if len(document.operations) < 8:  # a few names per document, not unbounded
            document.operations[operation_name] = (operation, plan)
        return operation, plan

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
