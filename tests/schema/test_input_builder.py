"""Inputs built from a plan (``schema.input_builder``) are the objects Strawberry builds; and
``provided`` and ``nul_issues``, made cheaper for sendEmail, answer as before.

Each variables value goes through graphql-core's coercion as a request's would (defaults
filled in), then becomes the mutation's Python arguments twice: with the plan, and with
Strawberry's own field-by-field conversion (the type's ``from_input`` unset). The two must be
equal, of the same classes, and share the same lists with graphql-core's value (a JSON
value's; every other list is a copy, as graphql-core hands each request the same default).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.types.arguments import convert_arguments
from strawberry.types.base import get_object_definition
from strawberry.types.maybe import Maybe

from resolvers.validation_issues import nul_issues
from schema import build_schema
from schema.enums import DeleteMessagePolicy, Provider
from schema.input_builder import build_from_plan, build_inputs_from_plans
from schema.inputs import SECRET_FIELDS, CreateEmailInboxInput, ServerInput, provided
from schema.sending import AttachmentInput, SendEmailInput
from storage.secrets import Secret

SEND = (
    "mutation Send($inboxId: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $inboxId, "
    "input: $input) { __typename } }"
)
INBOX = "6f1c1c4e-8a43-4b8e-9a57-0d5b1f2e3a11"

INPUTS: list[dict[str, Any]] = [
    {"to": ["Rita Receiver <rita@receiver.example.com>"], "subject": "Hi", "text": "Hello"},
    {"to": ["a@b.example"]},
    {},
    {"cc": [], "bcc": [], "to": [], "attachments": []},
    {
        "to": ["a@b.example", "Bo <bo@c.example>"],
        "cc": ["c@d.example"],
        "bcc": ["e@f.example"],
        "subject": "All of it",
        "text": "text",
        "html": "<p>html</p>",
        "replyToMessageId": "0b6f6c1e-2f57-4c64-9d7e-0b1c6a1c2d3e",
        "headers": {"X-Campaign-Id": "7", "Nested": {"a": [1, 2, None], "b": True}},
        "attachments": [
            {"filename": "a.txt", "contentType": "text/plain", "contentBase64": "aGk="},
            {"filename": "b.pdf", "contentType": "application/pdf", "contentBase64": ""},
        ],
        "sendAt": "2026-12-07T10:00:00+00:00",
        "idempotencyKey": "order-17",
    },
    {
        "subject": None,
        "text": None,
        "html": None,
        "replyToMessageId": None,
        "headers": None,
        "sendAt": None,
        "idempotencyKey": None,
    },
    {"headers": ["not", "an", "object"], "sendAt": "2026-12-07T10:00:00"},
    {"headers": "text", "to": ["x\u0000y@z.example"], "subject": "\u00e9t\u00e9 \U0001f600"},
]


# Fields without a default (None when omitted), optional lists, enums, nested inputs and
# lists of them, IDs: what the plan passes through and what it leaves to Strawberry.
@strawberry.enum
class Colour(enum.Enum):
    RED = "red"


@strawberry.input
class Inner:
    label: str | None
    tags: list[str | None] | None = None


@strawberry.input
class Outer:
    nick: str | None
    count: int
    colour: Colour | None = None
    inner: Inner | None = None
    inners: list[Inner] = strawberry.field(default_factory=list)
    ids: list[strawberry.ID] | None = None
    colours: list[Colour] | None = None


@strawberry.type
class EchoQuery:
    @strawberry.field
    def echo(self, value: Outer) -> int:
        return 0


@contextmanager
def strawberry_builds(*types: type) -> Iterator[None]:
    """Strawberry's own conversion for ``types`` while inside."""
    definitions = [get_object_definition(t, strict=True) for t in types]
    saved = [d.from_input for d in definitions]
    for definition in definitions:
        definition.from_input = None
    try:
        yield
    finally:
        for definition, hook in zip(definitions, saved, strict=True):
            definition.from_input = hook


def arguments(schema: Any, value: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """sendEmail's arguments for ``input: value``: graphql-core's, then the Python ones."""
    documents = schema.documents
    operation, _ = documents.operation(documents.build(SEND), "Send")
    coerced = get_variable_values(
        schema.graphql_schema(),
        operation.variable_definitions,
        {"inboxId": INBOX, "input": value},
    )
    assert not isinstance(coerced, list), coerced
    field_def = schema.graphql_schema().mutation_type.fields["sendEmail"]
    node = operation.selection_set.selections[0]
    raw = get_argument_values(field_def, node, coerced)
    mutation = schema.get_type_by_name("Mutation")
    field = next(f for f in mutation.fields if f.python_name == "send_email")
    converted = convert_arguments(
        raw, field.arguments, schema.schema_converter.scalar_registry, schema.config
    )
    return raw, converted


def lists_in(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, list):
        yield value
        for item in value:
            yield from lists_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from lists_in(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from lists_in(getattr(value, field.name))


def classes(value: Any) -> Any:
    """``value`` with every object's class spelled out (dataclass equality ignores it)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: classes(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return (type(value), fields)
    if isinstance(value, list):
        return [classes(v) for v in value]
    if isinstance(value, dict):
        return {k: classes(v) for k, v in value.items()}
    return (type(value), value)


@pytest.mark.parametrize("value", INPUTS, ids=range(len(INPUTS)))
def test_send_email_input_is_built_as_strawberry_builds_it(value: dict[str, Any]) -> None:
    schema = build_schema()
    assert get_object_definition(SendEmailInput, strict=True).from_input is build_from_plan
    assert get_object_definition(AttachmentInput, strict=True).from_input is build_from_plan
    raw, planned = arguments(schema, value)
    with strawberry_builds(SendEmailInput, AttachmentInput):
        _, reference = arguments(schema, value)
    assert planned == reference
    assert classes(planned) == classes(reference)
    # The same lists are graphql-core's own (a JSON value's), the others copies.
    kept = {id(x) for x in lists_in(raw)}
    shared = [[id(x) in kept for x in lists_in(args)] for args in (planned, reference)]
    assert shared[0] == shared[1]
    # A second request's defaults are its own lists, as with Strawberry.
    _, again = arguments(schema, value)
    planned["input"].to.append("changed@example.com")
    assert again["input"] == reference["input"]


def test_one_plan_serves_each_schema_alike() -> None:
    first, second = build_schema(), build_schema()
    value = INPUTS[4]
    assert arguments(first, value)[1] == arguments(second, value)[1]
    sent_at = arguments(second, value)[1]["input"].send_at
    assert sent_at == datetime(2026, 12, 7, 10, tzinfo=UTC)


def test_a_type_with_a_maybe_field_keeps_strawberry_building_it() -> None:
    # Strawberry does not check a Maybe field's null for a type that builds itself.
    @strawberry.input
    class Patch:
        name: Maybe[str]

    with pytest.raises(TypeError, match="Maybe"):
        build_inputs_from_plans(Patch)
    assert get_object_definition(Patch, strict=True).from_input is None


def test_every_kind_of_field_is_built_as_strawberry_builds_it() -> None:
    schema = strawberry.Schema(query=EchoQuery)
    values: list[dict[str, Any]] = [
        {"count": 1},
        {"count": 2, "nick": None, "colour": Colour.RED, "ids": ["a", "b"], "colours": []},
        {
            "count": 3,
            "nick": "n",
            "inner": {"label": None, "tags": ["x", None]},
            "inners": [{"label": "a"}, {"label": "b", "tags": None}],
            "colours": [Colour.RED],
        },
    ]
    field = schema.get_type_by_name("EchoQuery").fields[0]
    registry = schema.schema_converter.scalar_registry
    for value in values:
        build_inputs_from_plans(Outer, Inner)
        planned = convert_arguments({"value": value}, field.arguments, registry, schema.config)
        with strawberry_builds(Outer, Inner):
            reference = convert_arguments(
                {"value": value}, field.arguments, registry, schema.config
            )
        assert classes(planned) == classes(reference), value
        kept = {id(x) for x in lists_in(value)}
        assert not [x for x in lists_in(planned) if id(x) in kept]


def provided_as_before(value: Any) -> Any:
    """``schema.inputs.provided`` as it was written before its field names were remembered."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: (
                None if getattr(value, f.name) is None else Secret(str(getattr(value, f.name)))
            )
            if f.name in SECRET_FIELDS
            else provided_as_before(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not strawberry.UNSET
        }
    if isinstance(value, list):
        return [provided_as_before(v) for v in value]
    if hasattr(value, "value") and hasattr(type(value), "__members__"):
        return value.value
    return value


def test_provided_gives_what_it_gave_before() -> None:
    inputs: list[Any] = [
        CreateEmailInboxInput(email="a@b.example"),
        CreateEmailInboxInput(
            email="a@b.example",
            password="pw",
            provider=Provider.GMAIL,
            smtp=ServerInput(host="smtp.b.example", port=587, password="s", security=None),
            tags=["x", "y"],
            daily_send_limit=None,
            delete_message_policy=DeleteMessagePolicy.DONT_DELETE,
        ),
        SendEmailInput(
            to=["a@b.example"],
            attachments=[
                AttachmentInput(filename="a", content_type="text/plain", content_base64="")
            ],
        ),
        [SendEmailInput(), 3, None, "text", True, 1.5, {"k": [1]}],
    ]
    for value in inputs:
        now, before = provided(value), provided_as_before(value)
        assert repr(now) == repr(before)
        assert classes(now) == classes(before)


def test_nul_is_found_wherever_it_is() -> None:
    clean = {"to": ["a@b.example"], "subject": "Hi", "headers": {"X-A": ["1", 2]}, "n": 3}
    assert nul_issues(clean, "") == []
    dirty = {
        "to": ["a@b.example", "b\x00@c.example"],
        "send_at": None,
        "headers": {"X-A": ("1", "\x00")},
        "reply_to": "\x00",
    }
    assert [i.field for i in nul_issues(dirty, "")] == ["to[1]", "headers.X-A[1]", "replyTo"]
    assert [i.field for i in nul_issues("\x00", "subject")] == ["subject"]
