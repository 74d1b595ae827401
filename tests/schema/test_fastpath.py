"""The compiled executor (``schema.fastpath``) answers exactly as Strawberry and graphql-core do.

Each document runs both ways on the same database and context: through ``Plan.execute`` and
through ``strawberry.Schema.execute``. The answers must be byte-identical once encoded (same
keys, same order, same serialised values). Documents the plan cannot answer exactly (errors,
directives, introspection) must fall back to Strawberry, and the HTTP answer must then be
Strawberry's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import graphql
import orjson
import pytest
from graphql.execution.values import get_variable_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries

from inboxd.app import InboxdGraphQL
from mail.results import ProbeCode, ProbeResult
from resolvers.auth import authenticate
from schema import InboxdSchema, Limits, build_schema
from schema.context import Context
from schema.fastpath import Fallback, Plan
from schema.pipeline import _handover, _Resolved, response
from tests.conftest import Stack, Tenant
from tests.schema.fragments import CREATE, GET, INBOX_FIELDS, LIST, minimal_input

SCHEMA = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()

NESTED = """
query Nested($id: ID!, $first: Int!) {
  first: emailInbox(id: $id) { ...Basics }
  first: emailInbox(id: $id) { name smtp { host } }
  other: emailInbox(id: $id) {
    __typename
    ... on EmailInbox { tags status }
    connectionTests(first: $first) {
      __typename
      pageInfo { hasNextPage endCursor startCursor hasPreviousPage }
      edges { cursor node { id inboxId state reason attempts smtp { code message } dns { overall }
                            createdAt startedAt finishedAt version } }
    }
  }
  missing: emailInbox(id: "5b0c1c4e-0000-4000-8000-000000000000") { id }
  malformed: emailInbox(id: "not-a-uuid") { id }
  viewer { workspace { id name maxInboxes subscriptionActive } permissions inboxUsage }
  auditLog(first: 3) { edges { cursor node { id action inboxId apiKeyPrefix details at } } }
}
fragment Basics on EmailInbox { id email imap { port security hasPassword } }
"""

LIST_WITH_TESTS = """
query ListWithTests($first: Int!) {
  emailInboxes(first: $first) {
    totalCount
    edges { node { id email connectionTests(first: 2) { edges { node { id state } } } } }
  }
}"""


@contextmanager
def counting_strawberry_runs(view: InboxdGraphQL) -> Iterator[list[int]]:
    """Counts the requests that reach Strawberry's view while the block runs."""
    calls = [0]
    original = view.run

    async def counting_run(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    view.run = counting_run  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del view.run


@contextmanager
def counting_plan_runs() -> Iterator[list[int]]:
    """Counts the compiled plans executed while the block runs."""
    calls = [0]
    original = Plan.execute

    async def counting_execute(self: Plan, *args: Any) -> Any:
        calls[0] += 1
        return await original(self, *args)

    Plan.execute = counting_execute  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        Plan.execute = original  # type: ignore[method-assign]


def view_of(stack: Stack) -> InboxdGraphQL:
    view = stack.app.state.graphql
    assert isinstance(view, InboxdGraphQL)
    return view


async def context_for(stack: Stack, key: str | None) -> Context:
    principal = await authenticate(stack.state, key)
    return Context(state=stack.state, principal=principal, request_id=uuid.uuid4().hex)


def plan_of(stack: Stack, query: str, operation_name: str | None = None) -> Plan | None:
    """The compiled plan the pipeline would run for ``query``, if it has one."""
    documents = view_of(stack).schema.documents
    document = documents.document(query)
    if not document.valid:
        return None
    return documents.operation(document, operation_name)[1]


_REFERENCES: dict[Limits, InboxdSchema] = {}


def reference_schema(stack: Stack) -> InboxdSchema:
    """The same schema and pipeline with compiled plans off: graphql-core runs every query."""
    limits = view_of(stack).schema.limits
    if limits not in _REFERENCES:
        _REFERENCES[limits] = build_schema(limits, compile_queries=False)
    return _REFERENCES[limits]


async def both_ways(
    stack: Stack, key: str | None, query: str, variables: dict[str, Any]
) -> tuple[bytes | None, bytes]:
    """(the plan's answer or None if it fell back, graphql-core's answer), JSON-encoded."""
    plan = plan_of(stack, query)
    assert plan is not None, "the document should compile"
    coerced = get_variable_values(plan.schema, plan.operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list)
    try:
        fast: bytes | None = orjson.dumps(
            {"data": await plan.execute(await context_for(stack, key), coerced)}
        )
    except Fallback:
        fast = None
    context = await context_for(stack, key)
    slow = await reference_schema(stack).execute(
        query, variable_values=variables, context_value=context
    )
    return fast, orjson.dumps(response(slow, context.request_id))


async def seed(tenant: Tenant, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        created = await tenant.client(
            CREATE,
            {
                "input": minimal_input(
                    f"fast-{uuid.uuid4().hex[:8]}@example.com", tags=["a", "b"], department="ops"
                )
            },
        )
        ids.append(created.data["createEmailInbox"]["inbox"]["id"])
    return ids


async def test_compiled_answers_equal_strawberrys(stack: Stack, tenant: Tenant) -> None:
    ids = await seed(tenant, 3)
    # Results of a finished test, so JSON columns and nested objects are not all null.
    async with stack.state.db.connection() as connection:
        await connection.execute(
            "UPDATE connection_test SET state = 'FAILED', attempts = 1, started_at = now(), "
            "finished_at = now(), smtp_result = $2::text::jsonb WHERE inbox_id = $1",
            uuid.UUID(ids[0]),
            orjson.dumps(
                ProbeResult(
                    "smtp", False, ProbeCode.AUTH_FAILED, "Wrong password.", latency_ms=3
                ).to_dict()
            ).decode(),
        )
    cases: list[tuple[str, dict[str, Any]]] = [
        (GET, {"id": ids[0]}),
        (GET, {"id": str(uuid.uuid4())}),
        (LIST, {"first": 2}),
        (LIST, {"first": 50, "filter": {"department": "ops", "tag": "a"}}),
        (NESTED, {"id": ids[0], "first": 2}),
        (LIST_WITH_TESTS, {"first": 10}),
    ]
    for query, variables in cases:
        fast, slow = await both_ways(stack, tenant.key, query, variables)
        assert fast is not None, (query, slow)
        assert fast == slow, query


async def test_errors_fall_back_to_strawberry(stack: Stack, tenant: Tenant) -> None:
    ids = await seed(tenant, 1)
    # No key: the resolver refuses, and only Strawberry knows how to report it.
    fast, slow = await both_ways(stack, None, GET, {"id": ids[0]})
    assert fast is None
    assert b"UNAUTHENTICATED" in slow
    # Over HTTP the fallback's answer is what the client gets.
    anonymous = tenant.client.with_key(None)
    response = await anonymous(GET, {"id": ids[0]})
    assert response.error_codes() == ["UNAUTHENTICATED"]
    assert response.body["data"] == {"emailInbox": None}
    # A page size over the limit: a BAD_USER_INPUT error from the resolver.
    response = await tenant.client(LIST, {"first": 10_000})
    assert response.error_codes() == ["BAD_USER_INPUT"]


def test_what_is_not_compiled(stack: Stack) -> None:
    class Plans:
        def get(self, query: str, operation_name: str | None) -> Plan | None:
            return plan_of(stack, query, operation_name)

    plans = Plans()
    assert plans.get(GET, None) is not None
    assert plans.get(LIST, None) is not None
    # Directives, introspection, mutations of several fields, invalid documents: Strawberry
    # answers. A mutation of one field compiles as one: its resolver is run once, by itself.
    skip = "query($id: ID!, $s: Boolean!) { emailInbox(id: $id) { id name @skip(if: $s) } }"
    assert plans.get(skip, None) is None
    assert plans.get("{ __schema { queryType { name } } }", None) is None
    created = plans.get(CREATE, None)
    assert created is not None and created.root_field is not None
    assert plans.get(GET, None).root_field is None
    one = 'cancelEmail(id: "x") { __typename }'
    two = f"mutation {{ a: {one} b: {one} }}"
    assert plan_of(stack, f"mutation {{ a: {one} }}", None) is not None
    assert plans.get(two, None) is None
    assert plans.get("{ emailInbox { nope } }", None) is None
    assert plans.get("{ emailInbox(id: ", None) is None
    # Two operations: the name chooses; an unknown name compiles nothing.
    two = f"{GET}\nquery Other {{ viewer {{ inboxUsage }} }}"
    assert plans.get(two, "Other") is not None
    assert plans.get(two, "Nope") is None


async def test_http_answers_come_from_the_plan(stack: Stack, tenant: Tenant) -> None:
    ids = await seed(tenant, 1)
    query = f"query ViaHttp($id: ID!) {{ emailInbox(id: $id) {{ {INBOX_FIELDS} }} }}"
    with counting_strawberry_runs(view_of(stack)) as calls, counting_plan_runs() as plans:
        answer = await tenant.client(query, {"id": ids[0]})
    assert answer.data["emailInbox"]["id"] == ids[0]
    assert calls == [0], "a compiled query should not reach Strawberry's view"
    assert plans == [1], "a compiled query should be answered by its plan"
    _, slow = await both_ways(stack, tenant.key, query, {"id": ids[0]})
    assert orjson.loads(slow) == answer.body


@pytest.mark.slow
async def test_generated_queries_agree(stack: Stack, tenant: Tenant) -> None:
    """Queries generated from the schema: wherever the plan answers, it answers the same."""
    ids = await seed(tenant, 2)
    loop = asyncio.get_running_loop()
    compared = 0

    id_values = st.sampled_from([*ids, str(uuid.uuid4()), "x"])
    strategy = queries(
        SCHEMA,
        fields=["emailInbox", "emailInboxes", "viewer", "auditLog", "connectionTest"],
        custom_scalars={"ID": id_values.map(lambda v: graphql.StringValueNode(value=v))},
    )

    @settings(
        max_examples=150,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def check(query: str) -> None:
        nonlocal compared
        if plan_of(stack, query) is None:
            return
        fast, slow = asyncio.run_coroutine_threadsafe(
            both_ways(stack, tenant.key, query, {}), loop
        ).result(timeout=30)
        if fast is not None:
            compared += 1
            assert fast == slow, query

    await asyncio.to_thread(check)
    assert compared >= 50


def _without_volatile(value: Any) -> Any:
    """An answer without what differs between two workspaces doing the same thing."""
    volatile = {"id", "createdAt", "updatedAt", "existingId", "requestId"}
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


async def test_mutations_run_directly_and_answer_as_strawberry(
    stack: Stack, make_tenant: Any
) -> None:
    """Mutations skip Strawberry's view (graphql-core runs the prepared document): each
    outcome, success or typed error or top-level error, must read as Strawberry's would."""
    view = view_of(stack)
    over_http = await make_tenant(max_inboxes=2)  # answered by the direct path
    reference = await make_tenant(max_inboxes=2)  # the same steps through Strawberry
    steps: list[tuple[str | None, dict[str, Any]]] = [
        ("key", {"input": minimal_input("same@example.com", tags=["x"])}),  # success
        ("key", {"input": minimal_input("same@example.com")}),  # duplicate
        ("key", {"input": minimal_input("other@example.com")}),  # success
        ("key", {"input": minimal_input("third@example.com")}),  # plan limit
        ("key", {"input": minimal_input("not-an-address")}),  # validation error
        ("key", {"input": {"smtp": {"host": "smtp.example.com"}}}),  # invalid variables
        (None, {"input": minimal_input("anon@example.com")}),  # no key: top-level error
    ]
    answers = []
    with counting_strawberry_runs(view) as calls:
        for key, variables in steps:
            client = over_http.client if key else over_http.client.with_key(None)
            answers.append((await client(CREATE, variables)).body)
    assert calls == [0], "mutations should not reach Strawberry's view"
    for (key, variables), answer in zip(steps, answers, strict=True):
        context = await context_for(stack, reference.key if key else None)
        result = await view.schema.execute(CREATE, variable_values=variables, context_value=context)
        expected = response(result, context.request_id)
        assert _without_volatile(answer) == _without_volatile(expected), variables
    kinds = [a["data"]["createEmailInbox"]["__typename"] for a in answers[:5]]
    assert kinds == [
        "CreateEmailInboxSuccess",
        "DuplicateEmailInbox",
        "CreateEmailInboxSuccess",
        "InboxLimitReached",
        "ValidationError",
    ]
    assert answers[5]["data"] is None and "email" in answers[5]["errors"][0]["message"]
    assert answers[6]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_mutation_is_resolved_once_and_graphql_core_completes_that_value(
    stack: Stack, make_tenant: Any
) -> None:
    """What a mutation's plan cannot complete (or its resolver's exception) goes to
    graphql-core with the value already resolved: the same answer, and the mutation is not
    run a second time."""
    tenant = await make_tenant(max_inboxes=5)
    plan = plan_of(stack, CREATE)
    assert plan is not None and plan.root_field is not None
    variables = {"input": minimal_input("once@example.com")}
    coerced = get_variable_values(plan.schema, plan.operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list)
    value = await plan.resolve_once(await context_for(stack, tenant.key), coerced)
    by_plan = await plan.complete_root(value, await context_for(stack, tenant.key), coerced)
    context = await context_for(stack, tenant.key)
    by_core = await _handover(plan, variables, context, _Resolved(value, None), None)
    assert by_core.errors is None and by_core.data == by_plan
    assert by_plan["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess"
    usage = await tenant.client("{ viewer { inboxUsage } }", {})
    assert usage.data["viewer"]["inboxUsage"] == 1  # created once, not twice
    # The resolver's exception: graphql-core reports it at the field, as it would have.
    refused = await _handover(plan, variables, context, _Resolved(None, RuntimeError("boom")), None)
    assert refused.data is None and refused.errors is not None
    assert refused.errors[0].path == ["createEmailInbox"]
    assert isinstance(refused.errors[0].original_error, RuntimeError)
    assert (await tenant.client("{ viewer { inboxUsage } }", {})).data["viewer"]["inboxUsage"] == 1
