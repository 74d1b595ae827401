"""A cached compiled query skips Strawberry's per-operation machinery (``InboxdSchema.execute``
calls ``schema.pipeline.planned`` first), and answers exactly what Strawberry's ``execute`` with
the Pipeline extension answers. What the plan declines goes through Strawberry, and the plan is
not run a second time there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from strawberry.schema.schema import Schema as StrawberrySchema

from schema import build_schema
from schema.pipeline import response
from tests.conftest import Stack, Tenant
from tests.schema.fragments import GET
from tests.schema.test_fastpath import context_for, counting_plan_runs, seed, view_of


@contextmanager
def counting_strawberry_executes() -> Iterator[list[int]]:
    """Counts the operations that enter Strawberry's own ``execute`` while the block runs."""
    calls = [0]
    original = StrawberrySchema.execute

    async def counting(self: StrawberrySchema, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(self, *args, **kwargs)

    StrawberrySchema.execute = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        StrawberrySchema.execute = original  # type: ignore[method-assign]


async def test_a_cached_compiled_query_skips_strawberrys_execute(
    stack: Stack, tenant: Tenant
) -> None:
    ids = await seed(tenant, 1)
    await tenant.client(GET, {"id": ids[0]})  # the document is now cached
    with counting_strawberry_executes() as entered, counting_plan_runs() as plans:
        answer = await tenant.client(GET, {"id": ids[0]})
    assert answer.data["emailInbox"]["id"] == ids[0]
    assert entered == [0], "a cached compiled query should not enter Strawberry's execute"
    assert plans == [1]


async def test_the_shortcut_answers_what_strawberrys_execute_answers(
    stack: Stack, tenant: Tenant
) -> None:
    ids = await seed(tenant, 1)
    schema = view_of(stack).schema
    through = build_schema(schema.limits, plan_shortcut=False)
    for key in (tenant.key, None):
        for variables in ({"id": ids[0]}, {"id": "not-a-uuid"}, {"id": 7}, {}):
            answers = []
            for candidate in (schema, through):
                candidate.documents.document(GET)
                context = await context_for(stack, key)
                with counting_plan_runs() as plans:
                    result = await candidate.execute(
                        GET, variable_values=variables, context_value=context
                    )
                assert plans[0] <= 1, "a declined plan must not run again inside Strawberry"
                answers.append(orjson.dumps(response(result, "rid")))
            assert answers[0] == answers[1], (key is None, variables)


async def test_a_declined_plan_runs_once_and_strawberry_answers(
    stack: Stack, tenant: Tenant
) -> None:
    ids = await seed(tenant, 1)
    anonymous = tenant.client.with_key(None)
    await anonymous(GET, {"id": ids[0]})
    with counting_strawberry_executes() as entered, counting_plan_runs() as plans:
        answer = await anonymous(GET, {"id": ids[0]})
    # No key: the resolver refuses, the plan declines, and Strawberry reports it.
    assert answer.error_codes() == ["UNAUTHENTICATED"]
    assert entered == [1]
    assert plans == [1]
