"""How an operation runs: one Strawberry schema extension for every operation, HTTP or websocket.

``strawberry.Schema.execute`` and ``stream`` are the entry points; ``Pipeline`` is the seam
through which inboxd takes part in them:

- ``on_parse`` takes the document, validated, from ``schema.documents`` (one cache, one set of
  rules: tokens, depth, aliases, repeats, introspection, then the specification's);
- ``on_execute`` coerces the variables (without suggestions or quoted values) and runs a
  query's compiled plan (``schema.fastpath``) when it has one; anything the plan cannot answer
  exactly falls through to graphql-core, in the same request.

A cached, valid query with a plan skips Strawberry's operation machinery altogether, and so
does a compiled mutation (its resolver run once, see ``planned``)
(``InboxdSchema.execute`` calls ``planned`` first): building the execution context, the
extension runner and four hook contexts cost more per request than running the plan (bench B1,
"plans through Strawberry's execute"). ``planned`` is the same cache, rules, coercion and plan
as ``on_execute``; whatever it cannot answer exactly goes through Strawberry as usual.

Errors are masked (``mask_error``: unexpected ones logged with the request id and replaced) where
an answer leaves the process, and only there: ``response`` for HTTP, ``formatted`` for
websocket messages. Two hooks, not five: Strawberry wraps every hook of every extension anew
for each operation (~10 us a hook).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import FieldNode, GraphQLError, GraphQLResolveInfo, OperationType
from graphql import execute as graphql_execute
from graphql.execution.middleware import MiddlewareManager
from graphql.execution.values import VariableValues, get_variable_values
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType as AllowedOperation

from schema.documents import Document, public_error
from schema.fastpath import Fallback, Plan
from storage.db import UNAVAILABLE_ERRORS

if TYPE_CHECKING:
    from graphql import OperationDefinitionNode

    from schema.documents import Documents

log = structlog.get_logger("inboxd.graphql")
# The client's mistakes that Strawberry reports with an exception as the original error.
EXPECTED = (GraphQLError, CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)


def is_unexpected(error: GraphQLError) -> bool:
    """Errors we raised on purpose carry no original error (or a GraphQLError); the rest are
    bugs or outages, and their text (SQL, paths, values) must not reach the client."""
    original = error.original_error
    return original is not None and not isinstance(original, EXPECTED)


def mask_error(error: GraphQLError, request_id: str) -> GraphQLError:
    """``error`` as the client may see it: unexpected ones are logged with the request id
    and replaced by that id, or by SERVICE_UNAVAILABLE when the database cannot be reached."""
    if not is_unexpected(error):
        return error
    original = error.original_error
    if isinstance(original, UNAVAILABLE_ERRORS):
        log.warning("database unavailable", request_id=request_id, error=type(original).__name__)
        return GraphQLError(
            "The service is temporarily unavailable (database unreachable); retry shortly.",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "SERVICE_UNAVAILABLE", "requestId": request_id},
        )
    log.error(
        "unexpected error",
        request_id=request_id,
        path=list(error.path or []),
        exc_info=original,
    )
    return GraphQLError(
        f"Unexpected error (request id {request_id}).",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


def mask_errors(errors: list[GraphQLError], request_id: str) -> list[GraphQLError]:
    return [mask_error(error, request_id) for error in errors]


def formatted(errors: list[GraphQLError] | None, request_id: str) -> list[Any]:
    """Errors as a client receives them: masked, then formatted."""
    return [mask_error(error, request_id).formatted for error in errors or ()]


def response(result: Any, request_id: str) -> dict[str, Any]:
    """The JSON object a client receives for ``result`` (an execution result)."""
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = formatted(result.errors, request_id)
    extensions = getattr(result, "extensions", None)
    if extensions:
        answer["extensions"] = extensions
    return answer


# What became of an operation (inboxd.metrics counts by these): answered without errors; with
# the client's errors only (invalid, refused, not found); with a bug's; or without a database.
OUTCOMES = ("ok", "error", "internal_error", "unavailable")


def outcome_of(errors: Iterable[GraphQLError] | None) -> str:
    """The outcome of an operation whose result carries ``errors`` (unmasked)."""
    found = "ok"
    for error in errors or ():
        if is_unexpected(error) and not isinstance(error.original_error, UNAVAILABLE_ERRORS):
            return "internal_error"
        if is_unexpected(error) or (error.extensions or {}).get("code") == "SERVICE_UNAVAILABLE":
            found = "unavailable"
        elif found == "ok":
            found = "error"
    return found


def root_field(
    documents: Documents, query: object, operation_name: object
) -> tuple[str, str | None]:
    """The operation's type and its one root field's name (None: several, or not a plain
    field) for a valid cached document; ("query", None) for anything else."""
    document = documents.get(query) if isinstance(query, str) else None
    if document is None or not document.valid or not isinstance(operation_name, str | None):
        return "query", None
    operation, _ = documents.operation(document, operation_name)
    if operation is None:
        return "query", None
    selections = operation.selection_set.selections
    name = None
    if len(selections) == 1 and isinstance(selections[0], FieldNode):
        name = selections[0].name.value
    return operation.operation.value, name


def _request_id(context: Any) -> str:
    return getattr(context, "request_id", None) or "unknown"


class Pipeline(SchemaExtension):
    """inboxd's part in every operation (see the module's docstring)."""

    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.document: Document | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            # Callers ``prepare`` new documents off the loop first; ``document`` builds one
            # here only for a caller that did not.
            document = self.documents.document(context.query)
            if document.node is None:
                # Raised, not left to Strawberry's parser: it would parse the text again, on
                # the event loop. Strawberry answers it as the parse error it is.
                raise document.errors[0]
            context.graphql_document = document.node
            # Validated already: with errors set (even none), Strawberry validates no more.
            context.pre_execution_errors = list(document.errors)
            self.document = document
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = self.document
        if document is None or context.result is not None:
            yield
            return
        operation, plan = self.documents.operation(document, context.operation_name)
        if operation is None:
            yield
            return
        coerced = coerce_variables(self.documents, operation, context.variables)
        if isinstance(coerced, list):
            if operation.operation is OperationType.SUBSCRIPTION:
                raise coerced[0]  # a subscription's stream reports one error, then ends
            context.result = GraphQLExecutionResult(data=None, errors=coerced)
        elif plan is not None and plan.root_field is None and not _PLAN_DECLINED.get():
            # On Fallback, graphql-core answers: with its errors and partial data.
            with contextlib.suppress(Fallback):
                context.result = GraphQLExecutionResult(
                    data=await plan.execute(context.context, coerced), errors=None
                )
        yield


# Set while Strawberry answers a request whose plan declined it in ``planned``: the plan
# is not run a second time.
_PLAN_DECLINED: ContextVar[bool] = ContextVar("inboxd_plan_declined", default=False)


def coerce_variables(
    documents: Documents, operation: OperationDefinitionNode, variables: dict[str, Any] | None
) -> VariableValues | list[GraphQLError]:
    """The operation's variables, coerced; or the errors, without suggestions or values."""
    coerced = get_variable_values(
        documents.schema,
        operation.variable_definitions or (),
        variables or {},
        max_errors=20,
        hide_suggestions=True,
    )
    if isinstance(coerced, list):
        return [public_error(error) for error in coerced]
    return coerced


async def planned(
    documents: Documents,
    query: str | None,
    variables: dict[str, Any] | None,
    context_value: Any,
    operation_name: str | None,
    allowed: Iterable[AllowedOperation],
    executor_class: Any = None,
) -> GraphQLExecutionResult | None:
    """The result of a cached, valid, compiled operation answered by its plan; None when
    Strawberry must answer (a new or invalid document, bad variables; for a query, anything
    its plan cannot answer exactly). A mutation's resolver runs here once, whatever happens:
    what its plan cannot complete, graphql-core completes from the same value (``_handover``)."""
    document = documents.get(query) if isinstance(query, str) else None
    if document is None or not document.valid or not isinstance(operation_name, str | None):
        return None  # Strawberry's view tells the client what is wrong with the name
    operation, plan = documents.operation(document, operation_name)
    if operation is None or plan is None:
        return None
    kind = AllowedOperation.MUTATION if plan.root_field else AllowedOperation.QUERY
    if kind not in allowed:
        return None
    coerced = coerce_variables(documents, operation, variables)
    if isinstance(coerced, list):
        return None
    if plan.root_field is not None:
        try:
            value = await plan.resolve_once(context_value, coerced)
        except Exception as exc:  # graphql-core reports it as it reports any resolver's
            return await _handover(
                plan, variables, context_value, _Resolved(None, exc), executor_class
            )
        try:
            data = await plan.complete_root(value, context_value, coerced)
        except Fallback:
            return await _handover(
                plan, variables, context_value, _Resolved(value, None), executor_class
            )
        return GraphQLExecutionResult(data=data, errors=None)
    try:
        return GraphQLExecutionResult(data=await plan.execute(context_value, coerced), errors=None)
    except Fallback:
        _PLAN_DECLINED.set(True)
        return None


class _Resolved:
    """graphql-core middleware: the mutation's root field answered with what its one run of
    the resolver gave (its value, or its exception), every other field resolved as usual."""

    def __init__(self, value: Any, error: Exception | None) -> None:
        self.value = value
        self.error = error

    def resolve(self, next_: Any, root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        if info.path.prev is not None:
            return next_(root, info, **args)
        if self.error is not None:
            raise self.error
        return self.value


async def _handover(
    plan: Plan,
    variables: dict[str, Any] | None,
    context_value: Any,
    resolved: _Resolved,
    executor_class: Any,
) -> GraphQLExecutionResult:
    """graphql-core's answer for the mutation, its root field taken from ``resolved``."""
    result = graphql_execute(
        plan.schema,
        plan.document,
        context_value=context_value,
        variable_values=variables,
        operation_name=plan.operation.name.value if plan.operation.name else None,
        middleware=MiddlewareManager(resolved),
        **({"executor_class": executor_class} if executor_class is not None else {}),
    )
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, GraphQLExecutionResult)
    return result


@contextlib.contextmanager
def plan_scope() -> Iterator[None]:
    """One operation's scope for ``planned``: a plan it declined is not run again by
    ``on_execute`` for the same operation, and the mark ends with it."""
    token = _PLAN_DECLINED.set(False)
    try:
        yield
    finally:
        _PLAN_DECLINED.reset(token)


__all__ = [
    "OUTCOMES",
    "Pipeline",
    "Plan",
    "coerce_variables",
    "outcome_of",
    "plan_scope",
    "planned",
    "response",
    "root_field",
]
