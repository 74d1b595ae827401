"""Tenant isolation, as a property: whatever workspace B asks about workspace A's objects, it gets
exactly what it would get for an id that does not exist, and A's rows do not change.

A seeded generator (``SEED``, ``ITERATIONS`` rounds; hypothesis cannot drive an async test
against the in-loop session server) picks, each round, an ordered pair (A, B) from ``WORKSPACES``
workspaces of ``INBOXES_PER_WORKSPACE`` inboxes each (one of them an address every workspace has),
then one operation for B to try on A:

- queries: ``emailInbox``, ``connectionTest``, ``emailInboxes`` with random filters (A's address
  as the search, A's department and tag, status, active) and A's own page cursor, ``viewer``;
- mutations: ``updateEmailInbox`` (random partial input, with and without ``expectedVersion``),
  ``deleteEmailInbox``, ``testConnection``, ``checkDomainSetup``, ``sendTestEmail``;
- subscriptions over graphql-transport-ws: ``emailInboxStatus``, ``connectionTest`` and
  ``emailInboxEvents`` (while A changes its own inbox).

A's ids are sent in several spellings (upper case, braces, ``urn:uuid:``, no dashes). For every
operation that names an id, the response for A's id must equal, once the id is masked, the
response for a fresh random UUID; no object in any response may carry A's id, and A's own addresses
never appear. Every row of A's workspace (every table with a ``workspace_id`` or ``inbox_id``
column, and the workspace row) is compared as JSON text before and after: byte-identical,
``version`` and ``updated_at`` included.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from storage.db import Database
from tests.conftest import Tenant, TenantFactory
from tests.support.ws import WSClient

SEED = 20_240_611
ITERATIONS = 80
WORKSPACES = 4
INBOXES_PER_WORKSPACE = 3
SHARED_EMAIL = "shared@common.example"
SUB_TIMEOUT = 5.0

CREATE = """mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  __typename ... on CreateEmailInboxSuccess { inbox { id email connectionTests { edges {
  node { id } } } } } ... on UserError { code message } } }"""

INBOX_OUT = "__typename id email name version department tags status updatedAt"
TEST_OUT = "__typename id inboxId state version"
PAYLOAD_OUT = """__typename
  ... on UserError { code message }
  ... on NotFound { id }
  ... on ValidationError { fields { field message } }"""
UPDATE_OUT = """
  ... on VersionConflict { expectedVersion currentVersion }
  ... on DuplicateEmailInbox { email existingId }"""

GET = f"query($id: ID!) {{ emailInbox(id: $id) {{ {INBOX_OUT} }} }}"
GET_TEST = f"query($id: ID!) {{ connectionTest(id: $id) {{ {TEST_OUT} }} }}"
LIST = f"""query($first: Int!, $after: String, $filter: EmailInboxFilter) {{
  emailInboxes(first: $first, after: $after, filter: $filter) {{
    totalCount pageInfo {{ hasNextPage endCursor }}
    edges {{ cursor node {{ {INBOX_OUT} }} }} }} }}"""
VIEWER = "{ viewer { workspace { id name } permissions inboxUsage inboxLimit } }"
UPDATE = f"""mutation($id: ID!, $input: UpdateEmailInboxInput!, $v: Int) {{
  updateEmailInbox(id: $id, input: $input, expectedVersion: $v) {{ {PAYLOAD_OUT} {UPDATE_OUT}
    ... on UpdateEmailInboxSuccess {{ inbox {{ {INBOX_OUT} }} }} }} }}"""
DELETE = f"""mutation($id: ID!) {{ deleteEmailInbox(id: $id) {{ {PAYLOAD_OUT}
  ... on DeleteEmailInboxSuccess {{ id }} }} }}"""
TEST_CONNECTION = f"""mutation($id: ID!, $rt: Boolean!) {{
  testConnection(id: $id, roundTrip: $rt) {{
  {PAYLOAD_OUT} ... on TestConnectionSuccess {{ connectionTest {{ {TEST_OUT} }} }} }} }}"""
SEND_TEST = f"""mutation($id: ID!, $to: String) {{ sendTestEmail(id: $id, to: $to) {{
  {PAYLOAD_OUT} ... on TestConnectionSuccess {{ connectionTest {{ {TEST_OUT} }} }} }} }}"""
CHECK_DOMAIN = f"""mutation($id: ID!) {{ checkDomainSetup(id: $id) {{ {PAYLOAD_OUT}
  ... on CheckDomainSetupSuccess {{ inbox {{ {INBOX_OUT} }} }} }} }}"""
SUB_STATUS = f"subscription($id: ID!) {{ emailInboxStatus(id: $id) {{ {INBOX_OUT} }} }}"
SUB_TEST = f"subscription($id: ID!) {{ connectionTest(id: $id) {{ {TEST_OUT} }} }}"
SUB_EVENTS = (
    f"subscription {{ emailInboxEvents {{ kind inboxId version inbox {{ {INBOX_OUT} }} }} }}"
)
RENAME = f"""mutation($id: ID!, $name: String!) {{
  updateEmailInbox(id: $id, input: {{name: $name}}) {{ {PAYLOAD_OUT} {UPDATE_OUT}
  ... on UpdateEmailInboxSuccess {{ inbox {{ {INBOX_OUT} }} }} }} }}"""

SUCCESS_TYPES = {
    "UpdateEmailInboxSuccess",
    "DeleteEmailInboxSuccess",
    "TestConnectionSuccess",
    "CheckDomainSetupSuccess",
}


@dataclass
class Workspace:
    tenant: Tenant
    tag: str
    inbox_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)  # its own addresses (not the shared one)
    cursors: list[str] = field(default_factory=list)  # from its own listing, for B to replay

    @property
    def id(self) -> str:
        return str(self.tenant.workspace.id)


async def seed_workspace(make_tenant: TenantFactory, index: int) -> Workspace:
    tag = f"iso{index}x{uuid.uuid4().hex[:6]}"
    ws = Workspace(await make_tenant(), tag)
    for n in range(INBOXES_PER_WORKSPACE):
        email = SHARED_EMAIL if n == 0 else f"{tag}-{n}@{tag}.example"
        response = await ws.tenant.client(
            CREATE,
            {
                "input": {
                    "email": email,
                    "name": f"{tag} inbox {n}",
                    "department": f"dept-{tag}",
                    "tags": [f"tag-{tag}", "common"],
                    # No worker runs on the session server: these hosts are never contacted.
                    "smtp": {"host": f"smtp.{tag}.example", "port": 587, "password": "pw-" + tag},
                },
            },
        )
        created = response.data["createEmailInbox"]
        assert created["__typename"] == "CreateEmailInboxSuccess", created
        ws.inbox_ids.append(created["inbox"]["id"])
        ws.test_ids += [e["node"]["id"] for e in created["inbox"]["connectionTests"]["edges"]]
        if email != SHARED_EMAIL:
            ws.emails.append(email)
    assert ws.test_ids, "every new inbox queues a verification"
    page = await ws.tenant.client(LIST, {"first": 1})
    ws.cursors = [e["cursor"] for e in page.data["emailInboxes"]["edges"]]
    ws.cursors.append(page.data["emailInboxes"]["pageInfo"]["endCursor"])
    return ws


async def snapshot(db: Database, ws: Workspace) -> dict[str, list[str]]:
    """Every row that belongs to the workspace, as JSON text, per table."""
    found: dict[str, list[str]] = {}
    async with db.connection() as connection:
        columns = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name IN ('workspace_id', 'inbox_id')"
        )
        tables: dict[str, set[str]] = {}
        for table, column in columns:
            tables.setdefault(table, set()).add(column)
        ids = [uuid.UUID(i) for i in ws.inbox_ids]
        for table, cols in sorted(tables.items()):
            if "workspace_id" in cols:
                where, arg = "workspace_id = $1", uuid.UUID(ws.id)
            else:
                where, arg = "inbox_id = ANY($1::uuid[])", ids
            rows = await connection.fetch(
                f'SELECT row_to_json(t)::text FROM "{table}" t WHERE {where} ORDER BY 1', arg
            )
            found[table] = [r[0] for r in rows]
        row = await connection.fetch(
            "SELECT row_to_json(t)::text FROM workspace t WHERE id = $1", uuid.UUID(ws.id)
        )
        found["workspace"] = [r[0] for r in row]
    return found


def spellings(raw: str) -> list[str]:
    u = uuid.UUID(raw)
    return [str(u), str(u).upper(), "{" + str(u) + "}", u.urn, u.hex]


def objects(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        found.append(value)
        for v in value.values():
            found += objects(v)
    elif isinstance(value, list):
        for v in value:
            found += objects(v)
    return found


def canonical(raw: Any) -> str | None:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        return None


def assert_nothing_of(a: Workspace, body: Any, sent: str) -> None:
    """No object in ``body`` is one of A's, and none of A's own addresses appears (unless B sent
    it itself)."""
    a_ids = set(a.inbox_ids) | set(a.test_ids)
    for obj in objects(body):
        if obj.get("__typename") == "NotFound":
            continue  # echoes the id B asked for
        for key in ("id", "inboxId", "existingId"):
            assert canonical(obj.get(key)) not in a_ids, ("A's object returned to B", obj)
    dumped = json.dumps(body)
    for email in a.emails:
        if email not in sent:
            assert email not in dumped, ("A's address returned to B", dumped)


def same_spelling(example: str, new: uuid.UUID) -> str:
    """``new`` written the way ``example`` is (upper case, braces, urn, bare hex)."""
    if example.startswith("urn:"):
        return new.urn
    if example.startswith("{"):
        return "{" + str(new) + "}"
    if len(example) == 32:
        return new.hex
    return str(new).upper() if example == example.upper() else str(new)


def mask(body: Any, sent_id: str) -> str:
    """The body with every spelling of the sent id replaced by a placeholder."""
    dumped = json.dumps(body, sort_keys=True)
    for spelling in sorted({sent_id, *spellings(str(uuid.UUID(sent_id)))}, key=len, reverse=True):
        dumped = re.sub(re.escape(spelling), "<ID>", dumped, flags=re.IGNORECASE)
    return dumped


@dataclass
class Round:
    rng: random.Random
    a: Workspace
    b: Workspace
    db: Database
    base_url: str
    log: list[str] = field(default_factory=list)

    async def http(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await self.b.tenant.client(query, variables)
        assert response.status < 500, response.body
        sent = json.dumps(variables)
        assert_nothing_of(self.a, response.body, sent)
        return response.body

    async def same_as_missing(
        self, query: str, id_var: str, foreign_id: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        """B's answer for A's id, which must equal its answer for an id nobody has."""
        foreign = await self.http(query, {**variables, id_var: foreign_id})
        missing_id = same_spelling(foreign_id, uuid.uuid4())
        missing = await self.http(query, {**variables, id_var: missing_id})
        assert mask(foreign, foreign_id) == mask(missing, missing_id), (foreign, missing)
        for obj in objects(foreign.get("data")):
            assert obj.get("__typename") not in SUCCESS_TYPES, ("B changed A's object", obj)
        return foreign

    def a_inbox(self) -> str:
        return self.rng.choice(spellings(self.rng.choice(self.a.inbox_ids)))

    def a_test(self) -> str:
        return self.rng.choice(spellings(self.rng.choice(self.a.test_ids)))

    def random_update_input(self) -> dict[str, Any]:
        rng = self.rng
        choices: dict[str, Any] = {
            "name": f"pwned-{rng.randrange(1000)}",
            "displayName": "Mallory",
            "department": "stolen",
            "active": rng.choice([True, False]),
            "dailySendLimit": rng.choice([0, 5, 49, 1000]),
            "tags": ["x", "y"],
            "signature": "<b>hi</b>",
            "email": f"mallory-{rng.randrange(1000)}@evil.example",
            "smtp": {"host": "smtp.evil.example", "password": "stolen"},
            "imap": {"password": "stolen-too"},
            "replyTo": "not an address",
        }
        keys = rng.sample(sorted(choices), rng.randint(1, 4))
        return {k: choices[k] for k in keys}

    # --- the operations B tries -------------------------------------------------------

    async def op_get(self) -> None:
        body = await self.same_as_missing(GET, "id", self.a_inbox(), {})
        assert body["data"]["emailInbox"] is None

    async def op_get_test(self) -> None:
        body = await self.same_as_missing(GET_TEST, "id", self.a_test(), {})
        assert body["data"]["connectionTest"] is None

    async def op_list(self) -> None:
        rng = self.rng
        filters = {
            "search": rng.choice([*self.a.emails, SHARED_EMAIL, self.a.tag, "example", None]),
            "status": rng.choice(["PENDING", "ACTIVE", None]),
            "department": rng.choice([f"dept-{self.a.tag}", None]),
            "tag": rng.choice([f"tag-{self.a.tag}", "common", None]),
            "active": rng.choice([True, False, None]),
        }
        chosen = {k: v for k, v in filters.items() if v is not None and rng.random() < 0.6}
        after = None
        if rng.random() < 0.3:  # one of A's own cursors, replayed by B
            after = rng.choice(self.a.cursors)
        body = await self.http(
            LIST, {"first": rng.choice([1, 10, 100]), "after": after, "filter": chosen}
        )
        if body.get("data"):
            listed = body["data"]["emailInboxes"]
            for edge in listed["edges"]:
                assert canonical(edge["node"]["id"]) in self.b.inbox_ids, edge
            assert listed["totalCount"] <= len(self.b.inbox_ids)

    async def op_viewer(self) -> None:
        body = await self.http(VIEWER, {})
        viewer = body["data"]["viewer"]
        assert viewer["workspace"]["id"] == self.b.id
        assert viewer["inboxUsage"] == len(self.b.inbox_ids)

    async def op_update(self) -> None:
        variables: dict[str, Any] = {"input": self.random_update_input()}
        if self.rng.random() < 0.5:
            variables["v"] = self.rng.choice([1, 2, 3])
        await self.same_as_missing(UPDATE, "id", self.a_inbox(), variables)

    async def op_delete(self) -> None:
        body = await self.same_as_missing(DELETE, "id", self.a_inbox(), {})
        assert body["data"]["deleteEmailInbox"]["__typename"] == "NotFound", body

    async def op_test_connection(self) -> None:
        rt = self.rng.choice([True, False])
        body = await self.same_as_missing(TEST_CONNECTION, "id", self.a_inbox(), {"rt": rt})
        assert body["data"]["testConnection"]["__typename"] == "NotFound", body

    async def op_send_test(self) -> None:
        to = self.rng.choice([None, "someone@elsewhere.example", self.rng.choice(self.a.emails)])
        body = await self.same_as_missing(SEND_TEST, "id", self.a_inbox(), {"to": to})
        assert body["data"]["sendTestEmail"]["__typename"] == "NotFound", body

    async def op_check_domain(self) -> None:
        body = await self.same_as_missing(CHECK_DOMAIN, "id", self.a_inbox(), {})
        assert body["data"]["checkDomainSetup"]["__typename"] == "NotFound", body

    async def _first_message(self, query: str, sent_id: str) -> str:
        ws = await WSClient.connect(self.base_url, self.b.tenant.key)
        try:
            sub = await ws.subscribe(query, {"id": sent_id})
            try:
                message = await ws.next_payload(sub, timeout=SUB_TIMEOUT)
            except TimeoutError:
                raise AssertionError(f"no answer within {SUB_TIMEOUT} s for {sent_id}") from None
            assert_nothing_of(self.a, message, sent_id)
            if message["type"] == "next":
                data = (message.get("payload") or {}).get("data")
                assert not data or not any(data.values()), ("B got A's object", message)
            return mask(message, sent_id)
        finally:
            await ws.close()

    async def _subscribe_like_missing(self, query: str, foreign_id: str) -> None:
        foreign = await self._first_message(query, foreign_id)
        missing_id = same_spelling(foreign_id, uuid.uuid4())
        missing = await self._first_message(query, missing_id)
        assert foreign == missing, (foreign, missing)

    async def op_sub_status(self) -> None:
        await self._subscribe_like_missing(SUB_STATUS, self.a_inbox())

    async def op_sub_test(self) -> None:
        await self._subscribe_like_missing(SUB_TEST, self.a_test())

    async def op_sub_events(self) -> None:
        """B listens to its events while A changes its own inbox: B sees only its own two
        changes, made before and after A's."""
        ws = await WSClient.connect(self.base_url, self.b.tenant.key)
        try:
            sub = await ws.subscribe(SUB_EVENTS)
            mine = self.rng.choice(self.b.inbox_ids)
            seen: list[dict[str, Any]] = []

            async def rename_mine_and_wait(name: str) -> None:
                # The subscription is registered asynchronously: repeat the change until its
                # event comes through (bounded).
                for _ in range(20):
                    renamed = await self.b.tenant.client(RENAME, {"id": mine, "name": name})
                    version = renamed.data["updateEmailInbox"]["inbox"]["version"]
                    try:
                        while True:
                            message = await ws.next_payload(sub, timeout=0.5)
                            assert message["type"] == "next", message
                            event = message["payload"]["data"]["emailInboxEvents"]
                            seen.append(event)
                            if event["inboxId"] == mine and event["version"] == version:
                                return
                    except TimeoutError:
                        continue
                raise AssertionError("B never saw its own change")

            await rename_mine_and_wait(f"before-{self.rng.randrange(10**6)}")
            target = self.rng.choice(self.a.inbox_ids)
            renamed = await self.a.tenant.client(
                RENAME, {"id": target, "name": f"a-{self.rng.randrange(10**6)}"}
            )
            assert renamed.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
            self.log.append("A renamed its own inbox")
            before = await snapshot(self.db, self.a)
            await rename_mine_and_wait(f"after-{self.rng.randrange(10**6)}")
            for event in seen:
                assert_nothing_of(self.a, event, "")
                assert event["kind"] == "RESYNC" or canonical(event["inboxId"]) in self.b.inbox_ids
            assert await snapshot(self.db, self.a) == before
        finally:
            await ws.close()


OPERATIONS = [
    "op_get",
    "op_get_test",
    "op_list",
    "op_viewer",
    "op_update",
    "op_delete",
    "op_test_connection",
    "op_send_test",
    "op_check_domain",
    "op_sub_status",
    "op_sub_test",
    "op_sub_events",
]


async def test_workspace_b_never_reads_or_changes_workspace_a(make_tenant, db, base_url):
    spaces = [await seed_workspace(make_tenant, i) for i in range(WORKSPACES)]
    rng = random.Random(SEED)
    done: dict[str, int] = {}
    for iteration in range(ITERATIONS):
        a, b = rng.sample(spaces, 2)
        name = (
            OPERATIONS[iteration % len(OPERATIONS)]
            if iteration < len(OPERATIONS)
            else rng.choice(OPERATIONS)
        )
        before = await snapshot(db, a)
        round_ = Round(rng, a, b, db, base_url)
        try:
            await getattr(round_, name)()
        except AssertionError as exc:
            raise AssertionError(f"seed {SEED}, iteration {iteration}, {name}: {exc}") from exc
        if not round_.log:  # A changed nothing itself this round
            assert await snapshot(db, a) == before, f"iteration {iteration}, {name}"
        done[name] = done.get(name, 0) + 1
    print(f"isolation: {ITERATIONS} rounds, {done}")
    assert set(done) == set(OPERATIONS)


async def test_the_same_operations_work_on_the_callers_own_objects(make_tenant):
    """The control for the property above: B's own ids give B its own objects, so the NotFound
    answers there are isolation, not a broken query."""
    ws = await seed_workspace(make_tenant, 99)
    client = ws.tenant.client
    inbox = ws.inbox_ids[1]
    assert (await client(GET, {"id": inbox.upper()})).data["emailInbox"]["id"] == inbox
    assert (await client(GET_TEST, {"id": ws.test_ids[0]})).data["connectionTest"]["id"]
    updated = await client(UPDATE, {"id": inbox, "input": {"name": "mine"}})
    assert updated.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
    listed = await client(LIST, {"first": 10, "filter": {"search": ws.emails[0]}})
    assert [e["node"]["id"] for e in listed.data["emailInboxes"]["edges"]] == [ws.inbox_ids[1]]
    deleted = await client(DELETE, {"id": ws.inbox_ids[2]})
    assert deleted.data["deleteEmailInbox"]["__typename"] == "DeleteEmailInboxSuccess"
    ws_client = await WSClient.connect(ws.tenant.client.base_url, ws.tenant.key)
    try:
        sub = await ws_client.subscribe(SUB_STATUS, {"id": inbox})
        first = await ws_client.next_payload(sub, timeout=SUB_TIMEOUT)
        assert first["payload"]["data"]["emailInboxStatus"]["id"] == inbox
    finally:
        await ws_client.close()
