"""Schema-driven fuzzing of the GraphQL API over real HTTP.

hypothesis-graphql generates operations from the exported ``schema.graphql``: valid queries
(``QUERY_EXAMPLES``), valid mutations (``MUTATION_EXAMPLES``) and operations with exactly one
schema violation (``NEGATIVE_EXAMPLES``), plus request envelopes with ill-typed JSON variables,
odd ``query`` / ``operationName`` values and broken JSON (``ENVELOPE_EXAMPLES``):
``TOTAL_EXAMPLES`` = 2,300 in all, derandomized so every run sends the same requests. ID
arguments are drawn half from random strings and integers, half from real ids: inboxes and
connection tests of the fuzzing workspace and one inbox of another workspace, so the resolvers
behind a valid id are exercised too (update, delete, test, ...).

Every response must:

- have a status below 500;
- be JSON;
- carry no Python traceback (``Traceback``, ``File "``) and no SQL or driver text (``SELECT ``,
  ``INSERT ``, ``UPDATE ``, ``asyncpg``, ``sqlalchemy``, ``psycopg``) in any error message or
  extension, nor in any ``message`` inside ``data`` (``UserError.message``, ``FieldError``, ...);
- carry no ``INTERNAL_SERVER_ERROR`` (an unhandled exception, masked as "Unexpected error");
- contain no secret: every seeded inbox's password is ``CANARY``, and neither it nor the API key
  may appear anywhere in the body; the other workspace's inbox address may not either.

The server is a separate ``inboxd serve`` process (worker off, DNS checks off) on the session's
database: hypothesis tests are synchronous, and a sync client talking to the in-loop session
server would block the loop that has to answer it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, mutations, queries

from mail.message import has_control_characters
from storage.secrets import KeyRing
from tests.inboxd.test_processes import ServeProcess, process_env

pytestmark = pytest.mark.slow

QUERY_EXAMPLES = 800
MUTATION_EXAMPLES = 1000
NEGATIVE_EXAMPLES = 300
ENVELOPE_EXAMPLES = 200
TOTAL_EXAMPLES = QUERY_EXAMPLES + MUTATION_EXAMPLES + NEGATIVE_EXAMPLES + ENVELOPE_EXAMPLES

SCHEMA = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()

CANARY = "Fuzz-Canary-Pw-8d41c7e2"
FOREIGN_EMAIL = "foreign-canary-3b9e@isolated.example"
TARGETS = 5  # real inboxes of the fuzzing workspace that ID arguments may point at

TRACEBACK_MARKERS = ("Traceback", 'File "')
SQL_MARKERS = ("SELECT ", "INSERT ", "UPDATE ", "asyncpg", "sqlalchemy", "psycopg")

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

CREATE = """mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  __typename
  ... on CreateEmailInboxSuccess { inbox { id connectionTests { edges { node { id } } } } }
  ... on UserError { code message } } }"""
IDS = "{ emailInboxes(first: 100) { edges { node { id } } } }"


@dataclass
class FuzzTarget:
    base_url: str
    key: str
    http: httpx.Client
    log: Path
    inbox_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    foreign_inbox_id: str = ""
    sent: int = 0
    # What came back, for `pytest -s`: status codes, and error codes / payload types seen.
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def post(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        self.sent += 1
        return self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {self.key}"},
        )

    def create_target(self) -> None:
        n = uuid.uuid4().hex[:8]
        body = self.post(
            CREATE,
            {
                "input": {
                    "email": f"target-{n}@fuzz.example",
                    # No worker runs on this server: nothing is ever contacted.
                    "smtp": {"host": "127.0.0.1", "port": 2525, "password": CANARY},
                    "imap": {"host": "127.0.0.1", "port": 1143, "password": CANARY},
                }
            },
        ).json()
        created = body["data"]["createEmailInbox"]
        assert created["__typename"] == "CreateEmailInboxSuccess", body
        self.inbox_ids.append(created["inbox"]["id"])
        self.test_ids += [e["node"]["id"] for e in created["inbox"]["connectionTests"]["edges"]]

    def replace_deleted_targets(self) -> None:
        body = self.post(IDS).json()
        assert body.get("data"), body
        existing = {e["node"]["id"] for e in body["data"]["emailInboxes"]["edges"]}
        kept = [i for i in self.inbox_ids if i in existing]
        if len(kept) == len(self.inbox_ids):
            return
        self.inbox_ids[:] = kept
        while len(self.inbox_ids) < TARGETS:
            self.create_target()


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "inboxd.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def workspace_key(env: dict[str, str], max_inboxes: int) -> str:
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    cli(env, "workspace", "create", name, "--max-inboxes", str(max_inboxes))
    out = cli(
        env,
        "apikey",
        "create",
        "--workspace",
        name,
        "--permission",
        "manage-email-inbox",
        "--permission",
        "view-email-inbox",
    )
    match = re.search(r"inbx_\S+", out)
    assert match, out
    return match.group(0)


@pytest.fixture(scope="module")
def target(
    database_url: str, keyring: KeyRing, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    # process_env also turns DNS checks off (INBOXD_DNS_CHECK_ENABLED=false).
    # The per-key request rate limit is raised: the fuzzer is one key sending thousands of
    # requests a minute, and a 429 for all of them would test nothing.
    env = process_env(
        database_url,
        keyring,
        INBOXD_WORKER_ENABLED="false",
        INBOXD_RATE_LIMIT_REQUESTS_PER_MINUTE="1000000",
    )
    assert env["INBOXD_DNS_CHECK_ENABLED"] == "false"

    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    server = ServeProcess(env, log)
    try:
        key = workspace_key(env, max_inboxes=200)
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            fuzz = FuzzTarget(server.base_url, key, http, log)
            for _ in range(TARGETS):
                fuzz.create_target()
            # Another workspace's inbox: its id is offered to the fuzzer, its address must never
            # come back.
            other = FuzzTarget(server.base_url, workspace_key(env, max_inboxes=5), http, log)
            body = other.post(
                CREATE,
                {
                    "input": {
                        "email": FOREIGN_EMAIL,
                        "smtp": {"host": "127.0.0.1", "port": 2525, "password": CANARY},
                        "imap": {"host": "127.0.0.1", "port": 1143, "password": CANARY},
                    }
                },
            ).json()
            assert body["data"]["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess", body
            fuzz.foreign_inbox_id = body["data"]["createEmailInbox"]["inbox"]["id"]
            yield fuzz
    finally:
        server.stop()


def id_values(fuzz: FuzzTarget) -> st.SearchStrategy[graphql.ValueNode]:
    """Half random ids (strings, uuids, integers), half real ones, looked up at draw time."""
    text = st.text(max_size=40).map(lambda s: graphql.StringValueNode(value=s))
    uuids = st.uuids().map(lambda u: graphql.StringValueNode(value=str(u)))
    ints = st.integers(-(2**40), 2**40).map(lambda i: graphql.IntValueNode(value=str(i)))

    def real(index: int) -> graphql.ValueNode:
        pool = [*fuzz.inbox_ids, *fuzz.test_ids, fuzz.foreign_inbox_id]
        return graphql.StringValueNode(value=pool[index % len(pool)])

    return st.one_of(
        text, uuids, ints, st.integers(0, 1000).map(real), st.integers(0, 1000).map(real)
    )


def datetime_values() -> st.SearchStrategy[graphql.ValueNode]:
    """ISO 8601 datetimes (with and without a zone, past and future), and any text."""
    zones = st.sampled_from([None, UTC])
    valid = st.datetimes(timezones=zones).map(
        lambda d: graphql.StringValueNode(value=d.isoformat())
    )
    text = st.text(max_size=40).map(lambda s: graphql.StringValueNode(value=s))
    return st.one_of(valid, text)


def walk_messages(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "message" and isinstance(v, str):
                yield v
            else:
                yield from walk_messages(v)
    elif isinstance(value, list):
        for item in value:
            yield from walk_messages(item)


def check_response(fuzz: FuzzTarget, query: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:2000], query)
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text[:2000]}") from None
    fuzz.statuses[response.status_code] += 1
    text = response.text
    fuzz.outcomes.update(re.findall(r'"(?:code|__typename)":"([A-Za-z_]+)"', text))
    assert CANARY not in text, ("password leaked", text[:4000])
    assert fuzz.key not in text, ("API key leaked", text[:4000])
    assert FOREIGN_EMAIL not in text, ("other workspace's inbox leaked", text[:4000])
    if not isinstance(body, dict):
        return
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None
        assert code != "INTERNAL_SERVER_ERROR", ("unhandled exception in a resolver", error, query)
    suspects = [json.dumps(error) for error in body.get("errors") or []]
    suspects += list(walk_messages(body.get("data")))
    for suspect in suspects:
        for marker in TRACEBACK_MARKERS + SQL_MARKERS:
            assert marker not in suspect, (marker, suspect[:4000], query)


def send_and_check(fuzz: FuzzTarget, query: str) -> None:
    check_response(fuzz, query, fuzz.post(query))
    if "deleteEmailInbox" in query:
        fuzz.replace_deleted_targets()


def fuzz_strategy(fuzz: FuzzTarget, kind: str) -> st.SearchStrategy[str]:
    scalars = {"ID": id_values(fuzz), "DateTime": datetime_values()}
    if kind == "query":
        return queries(SCHEMA, custom_scalars=scalars)
    if kind == "mutation":
        return mutations(SCHEMA, custom_scalars=scalars)
    return from_schema(SCHEMA, custom_scalars=scalars, mode=Mode.NEGATIVE)


@pytest.mark.parametrize(
    ("kind", "examples"),
    [
        pytest.param("query", QUERY_EXAMPLES, id="queries"),
        pytest.param("mutation", MUTATION_EXAMPLES, id="mutations"),
        pytest.param("negative", NEGATIVE_EXAMPLES, id="negative"),
    ],
)
def test_fuzzed_operations_never_crash_or_leak(target: FuzzTarget, kind: str, examples: int):
    strategy = fuzz_strategy(target, kind)

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        send_and_check(target, data.draw(strategy, label="operation"))

    run()


OPERATIONS_WITH_VARIABLES = {
    "mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) { __typename } }": [
        "input"
    ],
    "mutation($id: ID!, $input: UpdateEmailInboxInput!, $v: Int) { updateEmailInbox(id: $id, "
    "input: $input, expectedVersion: $v) { __typename ... on UserError { code message } } }": [
        "id",
        "input",
        "v",
    ],
    "query($first: Int!, $after: String, $filter: EmailInboxFilter) { emailInboxes(first: $first,"
    " after: $after, filter: $filter) { totalCount edges { node { id email } } } }": [
        "first",
        "after",
        "filter",
    ],
    "query($id: ID!) { emailInbox(id: $id) { id email smtp { host hasPassword } } }": ["id"],
    "mutation($id: ID!, $to: String) { sendTestEmail(id: $id, to: $to) { __typename } }": [
        "id",
        "to",
    ],
}
INPUT_KEYS = [
    "email",
    "name",
    "smtp",
    "imap",
    "host",
    "port",
    "password",
    "security",
    "tags",
    "dailySendLimit",
    "provider",
    "search",
    "status",
    "signature",
    "username",
]


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(INPUT_KEYS) | st.text(max_size=8), inner, max_size=5),
        ),
        max_leaves=12,
    )


@st.composite
def envelopes(draw: st.DrawFn, fuzz: FuzzTarget) -> tuple[str, bytes]:
    """A request body: mostly a known operation with ill-typed variables, sometimes a broken
    envelope (query not a string, variables not an object, operationName that matches nothing,
    or not JSON at all)."""
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=200))
        return "raw body", raw
    query = draw(st.sampled_from(sorted(OPERATIONS_WITH_VARIABLES)))
    names = OPERATIONS_WITH_VARIABLES[query]
    real_ids = st.integers(0, 1000).map(
        lambda i: [*fuzz.inbox_ids, fuzz.foreign_inbox_id][i % (len(fuzz.inbox_ids) + 1)]
    )
    variables: Any = {
        name: draw(real_ids if name == "id" and draw(st.booleans()) else json_values())
        for name in names
        if draw(st.integers(0, 4)) > 0
    }
    body: dict[str, Any] = {"query": query, "variables": variables}
    twist = draw(st.integers(0, 7))
    if twist == 0:
        body["query"] = draw(json_values())
    elif twist == 1:
        body["variables"] = draw(json_values())
    elif twist == 2:
        body["operationName"] = draw(st.one_of(st.text(max_size=10), json_values()))
    elif twist == 3:
        del body["query"]
    return query, json.dumps(body).encode()


def test_fuzzed_envelopes_never_crash_or_leak(target: FuzzTarget):
    strategy = envelopes(target)

    @settings(FUZZ_SETTINGS, max_examples=ENVELOPE_EXAMPLES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        label, raw = data.draw(strategy, label="request")
        target.sent += 1
        response = target.http.post(
            "/graphql",
            content=raw,
            headers={"authorization": f"Bearer {target.key}", "content-type": "application/json"},
        )
        check_response(target, f"{label}: {raw[:2000]!r}", response)

    run()


MALFORMED_REQUESTS = {
    "empty body": b"",
    "not JSON": b"{nope",
    "JSON list (batch)": b"[]",
    "JSON string": b'"x"',
    "JSON number": b"1",
    "invalid UTF-8": b'{"query": "\xff\xfe"}',
    "no query": b'{"variables": {}}',
    "query is an int": b'{"query": 5}',
    "variables is a list": b'{"query": "{ viewer { inboxUsage } }", "variables": [1]}',
    "unknown operationName": b'{"query": "{ viewer { inboxUsage } }", "operationName": "Nope"}',
    "subscription over HTTP": b'{"query": "subscription { emailInboxEvents { kind } }"}',
}


@pytest.mark.parametrize("raw", list(MALFORMED_REQUESTS.values()), ids=list(MALFORMED_REQUESTS))
def test_malformed_requests_answer_json_without_5xx(target: FuzzTarget, raw: bytes):
    """The cases the envelope fuzzing found, one by one: each must get a JSON answer below 500."""
    response = target.http.post(
        "/graphql",
        content=raw,
        headers={"authorization": f"Bearer {target.key}", "content-type": "application/json"},
    )
    check_response(target, repr(raw), response)


ENCODED_WORD_EXAMPLES = 150
HEADER_INPUT_FIELDS = ["displayName", "senderInfo", "name"]
# The characters that must never reach a header, and some that may.
HOSTILE_CHARS = "\r\n\t\0\x7f\x85\u2028\u2029\x1b"


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """Text with RFC 2047 encoded words: q or b, utf-8 or latin-1, split over several words,
    nested, hiding control characters or not (issue 11: header injection)."""
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        charset = draw(st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "latin-1"]))
        alphabet = st.characters(
            max_codepoint=0xFF if "8859" in charset or "latin" in charset else 0x2FFF
        )
        text = draw(st.text(alphabet | st.sampled_from(HOSTILE_CHARS) | st.just(":"), max_size=12))
        raw = text.encode(
            "latin-1" if "8859" in charset or "latin" in charset else "utf-8", "replace"
        )
        if draw(st.booleans()):
            body = base64.b64encode(raw).decode()
            word = f"=?{charset}?{draw(st.sampled_from('bB'))}?{body}?="
        else:
            body = "".join(
                chr(b) if 0x21 <= b <= 0x7E and b not in b"=?_" else f"={b:02X}" for b in raw
            )
            word = f"=?{charset}?{draw(st.sampled_from('qQ'))}?{body}?="
        if draw(st.integers(0, 5)) == 0:  # a word inside a word
            inner = "".join(f"={b:02X}" for b in word.encode())
            word = f"=?utf-8?q?{inner}?="
        parts.append(word)
        parts.append(draw(st.sampled_from(["", " ", "Alice ", " <x@y> "])))
    return "".join(parts)[:200]


def test_fuzzed_encoded_words_never_reach_a_header(target: FuzzTarget):
    """Every field that reaches a mail header either refuses an encoded word that decodes to
    a control character, naming the field, or stores a text with none in any reading."""

    @settings(FUZZ_SETTINGS, max_examples=ENCODED_WORD_EXAMPLES)
    @given(field=st.sampled_from(HEADER_INPUT_FIELDS), value=encoded_words(), update=st.booleans())
    def run(field: str, value: str, update: bool) -> None:
        if update:
            query = (
                "mutation($id: ID!, $input: UpdateEmailInboxInput!) { updateEmailInbox(id: $id,"
                " input: $input) { __typename ... on UpdateEmailInboxSuccess { inbox { %s } }"
                " ... on ValidationError { fields { field } } } }" % field
            )
            variables = {"id": target.inbox_ids[0], "input": {field: value}}
        else:
            query = (
                "mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {"
                " __typename ... on CreateEmailInboxSuccess { inbox { id %s } }"
                " ... on ValidationError { fields { field } } } }" % field
            )
            variables = {
                "input": {
                    "email": f"ew-{uuid.uuid4().hex[:8]}@fuzz.example",
                    "smtp": {"host": "127.0.0.1", "port": 2525, "password": CANARY},
                    "imap": {"host": "127.0.0.1", "port": 1143, "password": CANARY},
                    field: value,
                }
            }
        response = target.post(query, variables)
        check_response(target, f"{query} {value!r}", response)
        payload = next(iter(response.json()["data"].values()))
        if has_control_characters(value.strip()):
            assert payload["__typename"] == "ValidationError", (value, payload)
            assert [f["field"] for f in payload["fields"]] == [field]
        elif payload["__typename"] != "ValidationError":
            stored = payload["inbox"][field]
            assert stored is None or not has_control_characters(stored), (value, stored)
        if not update and payload["__typename"] == "CreateEmailInboxSuccess":
            target.post(
                "mutation($id: ID!) { deleteEmailInbox(id: $id) { __typename } }",
                {"id": payload["inbox"]["id"]},
            )

    run()


def test_server_log_holds_no_secret(target: FuzzTarget):
    """Runs after the fuzzing (same module): nothing it sent made the server log a secret."""
    # Generate a little traffic of its own in case this test runs alone.
    check_response(target, "{ viewer { inboxUsage } }", target.post("{ viewer { inboxUsage } }"))
    print(f"fuzz: {target.sent} requests, statuses {dict(target.statuses)}")
    print(f"fuzz: outcomes {dict(target.outcomes.most_common(40))}")
    logged = target.log.read_text()
    assert CANARY not in logged
    assert target.key not in logged


CHAIN_FIELDS = ["inboxUsage", "permissions", "workspace { id }", "workspace { name maxInboxes }"]


@st.composite
def fragment_chains(draw: st.DrawFn) -> str:
    """Fragments that each spread the previous one several times (the shape that once froze
    the process: work doubling per level), with or without aliases, on queries or mutations'
    payloads alike: each must be answered or refused at once, never walked exponentially."""
    levels = draw(st.integers(2, 45))
    spreads = draw(st.integers(1, 3))
    alias = draw(st.booleans())
    field_text = draw(st.sampled_from(CHAIN_FIELDS))
    fragments = [f"fragment F0 on Viewer {{ {'a0: ' if alias else ''}{field_text} }}"]
    for i in range(1, levels):
        body = " ".join(f"...F{i - 1}" for _ in range(spreads))
        extra = f"a{i}: inboxUsage " if alias and draw(st.booleans()) else ""
        fragments.append(f"fragment F{i} on Viewer {{ {extra}{body} }}")
    top = draw(st.sampled_from(["{ viewer { ...F%d } }", "query Q { viewer { ...F%d } }"]))
    return (top % (levels - 1)) + "\n" + "\n".join(fragments)


def test_fuzzed_fragment_chains_are_answered_at_once(target: FuzzTarget):
    strategy = fragment_chains()

    @settings(FUZZ_SETTINGS, max_examples=60)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        query = data.draw(strategy, label="chain")
        # The client's timeout (30 s) ends the test if the server stops answering.
        send_and_check(target, query)
        assert target.http.get("/healthz").status_code == 200

    run()
