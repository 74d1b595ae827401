"""Writing inboxes (storage/inboxes.py, storage/inbox_passwords.py) where a user cannot see the
difference at once: the open test a settings change supersedes, login spacing after a change,
two updates racing on one expectedVersion, deleting what is not there, and key rotation one
batch at a time.

The stack of tests/storage/test_job_runs.py: a database of its own and no worker, so the
queued tests stay as they were written and the module knows every row.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import timedelta

import pytest

from storage import inbox_changes, inbox_passwords, inboxes, jobs
from storage.errors import VersionConflictError
from storage.secrets import KeyRing
from tests.schema.fragments import CREATE, DELETE, UPDATE, minimal_input
from tests.storage.test_job_queue import finish_open_test, new_inbox
from tests.storage.test_job_runs import stack  # noqa: F401  (fixture)
from tests.support.rows import stored_inbox, stored_tests
from tests.support.waiting import wait_until


async def test_a_connection_change_supersedes_the_open_test(stack):  # noqa: F811
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    async with stack.db.connection() as connection:
        first = await jobs.get_open_test(connection, inbox_id)
        await connection.execute(
            "UPDATE email_inbox SET status = 'FAILED', status_reason = 'Login refused.' "
            "WHERE id = $1",
            inbox_id,
        )
    assert first is not None and first.state == "QUEUED"
    changed = await tenant.client(
        UPDATE,
        {"id": str(inbox_id), "input": {"smtp": {"host": "smtp2.example.com", "password": "pw-2"}}},
    )
    shown = changed.data["updateEmailInbox"]["inbox"]
    assert (shown["status"], shown["statusReason"]) == ("PENDING", None)
    by_id = {t.id: t for t in await stored_tests(stack.db, [inbox_id])}
    assert by_id[first.id].state == "CANCELLED"
    assert by_id[first.id].error == "Superseded by a change to the inbox's connection settings."
    (new,) = [t for t in by_id.values() if t.id != first.id]
    assert (new.state, new.reason) == ("QUEUED", "SETTINGS_CHANGED")
    assert new.inbox_version == shown["version"]


async def test_a_settings_change_waits_for_the_accounts_spacing(stack):  # noqa: F811
    tenant = await stack.tenant()
    shared = f"shared-{secrets.token_hex(4)}"
    changed = await new_inbox(tenant, username=shared)
    await finish_open_test(stack, changed)
    other = await new_inbox(tenant, username=shared)  # its CREATED test is queued now
    async with stack.db.connection() as connection:
        booked = await jobs.get_open_test(connection, other)
        assert booked is not None
        async with connection.transaction():
            _, test = await inboxes.update_inbox(
                connection,
                workspace_id=tenant.workspace.id,
                inbox_id=changed,
                changes={"smtp_port": 2525},
                new_passwords={},
                keyring=stack.stack.state.keyring,
                spacing=timedelta(seconds=30),
            )
    assert test is not None and test.reason == "SETTINGS_CHANGED"
    assert test.run_after == booked.run_after + timedelta(seconds=30)


async def test_a_new_inbox_waits_for_its_accounts_spacing(stack):  # noqa: F811
    # create_inbox finds the accounts' latest login only when spacing is on (more than zero).
    state = stack.stack.state
    tenant = await stack.tenant()
    shared = f"shared-{secrets.token_hex(4)}"
    first = await new_inbox(tenant, username=shared)  # no spacing yet: due at once
    async with stack.db.connection() as connection:
        booked = await jobs.get_open_test(connection, first)
    assert booked is not None
    state.verification_spacing = timedelta(hours=1)
    try:
        second = await new_inbox(tenant, username=shared)
    finally:
        state.verification_spacing = timedelta(0)
    async with stack.db.connection() as connection:
        waiting = await jobs.get_open_test(connection, second)
    assert waiting is not None and waiting.reason == "CREATED"
    assert waiting.run_after == booked.run_after + timedelta(hours=1)


async def test_without_spacing_a_new_inbox_is_due_at_once(stack):  # noqa: F811
    # Even when another inbox of the same accounts has a login booked later (a retry).
    tenant = await stack.tenant()
    shared = f"shared-{secrets.token_hex(4)}"
    first = await new_inbox(tenant, username=shared)
    async with stack.db.connection() as connection:
        await connection.execute(
            "UPDATE connection_test SET run_after = now() + interval '1 hour' WHERE inbox_id = $1",
            first,
        )
    second = await new_inbox(tenant, username=shared)
    async with stack.db.connection() as connection:
        test = await jobs.get_open_test(connection, second)
        now = await connection.fetchval("SELECT now()")
    assert test is not None and test.run_after <= now


async def locks_awaited(stack) -> bool:  # noqa: F811
    async with stack.db.connection() as connection:
        waiting: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    return waiting > 0


async def test_updates_racing_on_one_expected_version_conflict(stack):  # noqa: F811
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    version = (await stored_inbox(stack.db, inbox_id)).version
    keyring = stack.stack.state.keyring

    async def update(connection, name: str):
        return await inboxes.update_inbox(
            connection,
            workspace_id=tenant.workspace.id,
            inbox_id=inbox_id,
            changes={"name": name},
            new_passwords={},
            keyring=keyring,
            expected_version=version,
        )

    async def second() -> None:
        async with stack.db.connection() as connection, connection.transaction():
            await update(connection, "second")

    async with stack.db.connection() as connection:
        first = connection.transaction()
        await first.start()
        await update(connection, "first")
        racing = asyncio.create_task(second())
        # The second update read the row after the first locked it: it waits for the commit.
        await wait_until(lambda: locks_awaited(stack), "the second update waits for the row")
        await first.commit()
    with pytest.raises(VersionConflictError):
        await racing
    stored = await stored_inbox(stack.db, inbox_id)
    assert (stored.name, stored.version) == ("first", version + 1)


async def test_deleting_an_inbox_that_is_not_there_names_it(stack):  # noqa: F811
    tenant = await stack.tenant()
    missing = uuid.uuid4()
    refused = (await tenant.client(DELETE, {"id": str(missing)})).data["deleteEmailInbox"]
    assert refused["__typename"] == "NotFound"
    assert refused["message"] == f"No email inbox with id {missing} in this workspace."
    # Another workspace's inbox is not there either, and stays.
    elsewhere = await new_inbox(await stack.tenant())
    refused = (await tenant.client(DELETE, {"id": str(elsewhere)})).data["deleteEmailInbox"]
    assert refused["message"] == f"No email inbox with id {elsewhere} in this workspace."
    assert (await stored_inbox(stack.db, elsewhere)).id == elsewhere


async def test_updating_an_inbox_that_is_not_there_names_it(stack):  # noqa: F811
    tenant = await stack.tenant()
    elsewhere = await new_inbox(await stack.tenant())
    for missing in (uuid.uuid4(), elsewhere):
        refused = (
            await tenant.client(UPDATE, {"id": str(missing), "input": {"name": "Renamed"}})
        ).data["updateEmailInbox"]
        assert (refused["__typename"], refused["id"]) == ("NotFound", str(missing))
        assert refused["message"] == f"No email inbox with id {missing} in this workspace."
    assert (await stored_inbox(stack.db, elsewhere)).name != "Renamed"


async def test_the_plan_limit_holds_with_login_spacing(stack):  # noqa: F811
    # With spacing, the count is the statement that also finds the accounts' latest login.
    state = stack.stack.state
    tenant = await stack.tenant(max_inboxes=1)
    state.verification_spacing = timedelta(seconds=30)
    try:
        await new_inbox(tenant)
        email = f"over-{secrets.token_hex(5)}@example.com"
        refused = (await tenant.client(CREATE, {"input": minimal_input(email)})).data
    finally:
        state.verification_spacing = timedelta(0)
    payload = refused["createEmailInbox"]
    assert payload["__typename"] == "InboxLimitReached", payload
    assert (payload["currentUsage"], payload["maxInboxes"]) == (1, 1)


async def test_rotation_takes_one_batch_at_a_time(stack):  # noqa: F811
    tenant = await stack.tenant()
    for _ in range(3):
        await new_inbox(tenant)
    async with stack.db.connection() as connection:
        ids = [r["id"] for r in await connection.fetch("SELECT id FROM email_inbox ORDER BY id")]
    ring = stack.stack.state.keyring
    newer = KeyRing.parse(
        ",".join(f"{k}:{v}" for k, v in _specs(ring)) + "," + KeyRing.generate_spec("next")
    )
    batches = []
    after = None
    while True:
        async with stack.db.connection() as connection:
            batch = await inbox_passwords.rotate_secrets(
                connection, newer, after=after, batch_size=2
            )
        batches.append(batch)
        if batch.last_id is None:
            break
        after = batch.last_id
    expected = [ids[i] for i in range(1, len(ids), 2)]
    if len(ids) % 2:
        expected.append(ids[-1])
    assert [b.last_id for b in batches] == [*expected, None]
    assert all(b.rotated <= 2 for b in batches)
    assert sum(b.rotated for b in batches) == len(ids)
    # Rotate back: the other tests of the module read with the stack's ring.
    after = None
    back = KeyRing.parse(",".join(f"{k}:{v}" for k, v in reversed(_specs(newer))))
    while True:
        async with stack.db.connection() as connection:
            batch = await inbox_passwords.rotate_secrets(connection, back, after=after)
        if batch.last_id is None:
            break
        after = batch.last_id


def _specs(ring: KeyRing) -> list[tuple[str, str]]:
    from tests.storage.test_secrets import _specs as specs

    return specs(ring)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"status": "'ACTIVE'"},
        {"oauth_access_token": "$2", "smtp_password": "$3"},
    ],
    ids=["nothing", "a_setting", "a_token_and_a_password"],
)
def test_a_token_refresh_writes_only_token_columns(values):
    # A refreshed token is not a change of the inbox (no version, no event): anything but the
    # token columns, or nothing at all, is refused before a statement exists.
    with pytest.raises(ValueError, match="writes only"):
        inbox_changes.tokens("inbox", values, where="i.id = $1", returning="i.id")
    statement = inbox_changes.tokens(
        "inbox",
        {"oauth_refresh_token": "$3", "oauth_access_token": "$2"},
        where="i.id = $1",
        returning="i.id",
    )
    assert statement == (
        "inbox AS (UPDATE email_inbox AS i SET oauth_access_token = $2, "
        "oauth_refresh_token = $3 WHERE i.id = $1 RETURNING i.id)"
    )


async def test_a_password_resent_unchanged_is_no_change(stack):  # noqa: F811
    """The stored password is compared (in constant time) before it is encrypted again: the
    same one sent back, as a form that always sends its fields does, changes nothing (no new
    version, no verification queued, the ACTIVE inbox stays ACTIVE)."""
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    await finish_open_test(stack, inbox_id)
    before = await stored_inbox(stack.db, inbox_id)
    tests_before = await stored_tests(stack.db, [inbox_id])
    resent = await tenant.client(
        UPDATE, {"id": str(inbox_id), "input": {"smtp": {"password": "app-password-1"}}}
    )
    assert resent.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
    after = await stored_inbox(stack.db, inbox_id)
    assert after.version == before.version and after.status == before.status == "ACTIVE"
    assert after.smtp_password == before.smtp_password  # not even encrypted again
    assert len(await stored_tests(stack.db, [inbox_id])) == len(tests_before)
