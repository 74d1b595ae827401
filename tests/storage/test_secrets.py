"""Credentials at rest: encrypted, bound to their row and column, rotatable."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from storage import inbox_passwords, inboxes
from storage.inbox_reads import INBOX_COLUMNS
from storage.rows import InboxRow
from storage.secrets import DecryptionError, KeyRing, Secret, associated_data, key_id_of
from tests.conftest import verifier_on
from tests.schema.fragments import CREATE, GET, minimal_input


def pg_dump() -> Path:
    # pgserver ships a PostgreSQL 16 client, which dumps the 15 server CI uses as well.
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"


def test_secret_is_redacted_in_repr_and_str():
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "hunter2-very-secret"


def test_key_ring_round_trip_and_binding():
    ring = KeyRing.parse(KeyRing.generate_spec("a"))
    row_a, row_b = uuid.uuid4(), uuid.uuid4()
    blob = ring.encrypt("pw", associated_data("email_inbox", "smtp_password", row_a))
    assert b"pw" not in blob
    assert (
        ring.decrypt(blob, associated_data("email_inbox", "smtp_password", row_a)).reveal() == "pw"
    )
    with pytest.raises(DecryptionError):
        ring.decrypt(blob, associated_data("email_inbox", "smtp_password", row_b))
    with pytest.raises(DecryptionError):
        ring.decrypt(blob, associated_data("email_inbox", "imap_password", row_a))
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, associated_data("email_inbox", "smtp_password", row_a))


def test_key_ring_refuses_bad_keys_without_echoing_them():
    with pytest.raises(ValueError) as bad_length:
        KeyRing.parse("k1:c2hvcnQ=")
    assert "32 bytes" in str(bad_length.value)
    with pytest.raises(ValueError) as bad_b64:
        KeyRing.parse("k1:!!!not-base64-secret!!!")
    assert "not-base64-secret" not in str(bad_b64.value)


def test_keys_file_with_one_key_per_line():
    # .inboxd/encryption.keys holds one key per line; the last line's key encrypts.
    old, new = KeyRing.generate_spec("line1"), KeyRing.generate_spec("line2")
    ring = KeyRing.parse(f"{old}\n{new}\n")
    assert ring.key_ids == ["line1", "line2"] and ring.primary_key_id == "line2"


def test_key_with_a_stray_character_is_refused_by_name():
    encoded = KeyRing.generate_spec("typo").split(":")[1]
    # A character outside base64 is a typo in the key, not something to skip over.
    with pytest.raises(ValueError) as stray:
        KeyRing.parse(f"typo:{encoded[:10]}*{encoded[10:]}")
    assert "'typo'" in str(stray.value) and "base64" in str(stray.value)


def test_key_ids_must_fit_the_envelope():
    encoded = KeyRing.generate_spec("x").split(":")[1]
    with pytest.raises(ValueError, match="invalid key id"):
        KeyRing.parse(f":{encoded}")
    # The envelope stores the key id's length in one byte.
    longest = KeyRing.parse(f"{'k' * 255}:{encoded}")
    aad = associated_data("email_inbox", "smtp_password", uuid.uuid4())
    assert longest.decrypt(longest.encrypt("pw", aad), aad).reveal() == "pw"
    with pytest.raises(ValueError, match="invalid key id"):
        KeyRing.parse(f"{'k' * 256}:{encoded}")


def test_old_keys_still_decrypt_after_a_new_one_is_added():
    old = KeyRing.generate_spec("old")
    ring_old = KeyRing.parse(old)
    aad = associated_data("email_inbox", "smtp_password", uuid.uuid4())
    blob = ring_old.encrypt("pw", aad)
    ring_both = KeyRing.parse(old + "," + KeyRing.generate_spec("new"))
    assert ring_both.primary_key_id == "new"
    assert ring_both.decrypt(blob, aad).reveal() == "pw"
    assert ring_both.needs_rotation(blob)


async def test_pg_dump_holds_no_plaintext_password(tenant, database_url, pg_server):
    password = "Plaintext-Must-Not-Leak-7731"
    created = await tenant.client(
        CREATE,
        {
            "input": minimal_input(
                "dump@example.com", smtp={"host": "smtp.example.com", "password": password}
            )
        },
    )
    assert created.data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess"
    dump = subprocess.run(
        [str(pg_dump()), "--data-only", "--dbname", database_url],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert b"dump@example.com" in dump  # the dump did capture the row
    assert password.encode() not in dump
    assert password.encode().hex().encode() not in dump


async def test_ciphertext_moved_to_another_row_fails_to_decrypt(tenant, db, keyring):
    one = (await tenant.client(CREATE, {"input": minimal_input("one@example.com")})).data[
        "createEmailInbox"
    ]["inbox"]
    two = (await tenant.client(CREATE, {"input": minimal_input("two@example.com")})).data[
        "createEmailInbox"
    ]["inbox"]
    async with db.connection() as connection, connection.transaction():
        stolen = await connection.fetchval(
            "SELECT smtp_password FROM email_inbox WHERE id = $1", uuid.UUID(one["id"])
        )
        await connection.execute(
            "UPDATE email_inbox SET smtp_password = $2 WHERE id = $1", uuid.UUID(two["id"]), stolen
        )
    async with db.connection() as connection:
        row = await inboxes.get_inbox(connection, tenant.workspace.id, uuid.UUID(two["id"]))
        with pytest.raises(DecryptionError):
            inbox_passwords.decrypt_password(keyring, row, "smtp_password")
        row_one = await inboxes.get_inbox(connection, tenant.workspace.id, uuid.UUID(one["id"]))
        assert inbox_passwords.decrypt_password(keyring, row_one, "smtp_password").reveal() == (
            "app-password-1"
        )


async def _versions(db, workspace_id, ids):
    async with db.connection() as connection:
        rows = [await inboxes.get_inbox(connection, workspace_id, i) for i in ids]
    return [(row.version, row.updated_at) for row in rows]


async def test_rotation_re_encrypts_everything_and_keeps_it_readable(tenant, db, keyring):
    ids = []
    for i in range(5):
        created = await tenant.client(
            CREATE,
            {
                "input": minimal_input(
                    f"rot{i}@example.com", smtp={"host": "smtp.example.com", "password": f"pw-{i}"}
                )
            },
        )
        ids.append(uuid.UUID(created.data["createEmailInbox"]["inbox"]["id"]))
    rotated = KeyRing.parse(
        ",".join(f"{kid}:{key}" for kid, key in _specs(keyring))
        + ","
        + KeyRing.generate_spec("test2")
    )
    # Other tests share this database (one of them leaves a row that cannot be decrypted on
    # purpose): every row is either re-encrypted or reported, none is skipped silently.
    readable, unreadable = await _readability(db, keyring)
    versions = await _versions(db, tenant.workspace.id, ids)
    total, reported = await rotate_all(db, rotated)
    # The same passwords under a new key: no client-visible change, so no new version (an
    # update with expectedVersion racing a rotation must not conflict).
    assert await _versions(db, tenant.workspace.id, ids) == versions
    assert total == len(readable) and set(ids) <= readable
    assert set(reported) == unreadable
    async with db.connection() as connection:
        for i, inbox_id in enumerate(ids):
            row = await inboxes.get_inbox(connection, tenant.workspace.id, inbox_id)
            assert not rotated.needs_rotation(row.smtp_password)
            assert not rotated.needs_rotation(row.imap_password)
            assert (
                inbox_passwords.decrypt_password(rotated, row, "smtp_password").reveal()
                == f"pw-{i}"
            )
            # The new key alone now suffices for these rows.
            new_only = KeyRing.parse(
                ",".join(f"{k}:{v}" for k, v in _specs(rotated) if k == "test2")
            )
            assert (
                inbox_passwords.decrypt_password(new_only, row, "imap_password").reveal()
                == f"pw-{i}"
            )
    # Rotate back so other tests' rows stay readable under the session key ring.
    await rotate_all(db, KeyRing.parse(",".join(f"{k}:{v}" for k, v in reversed(_specs(rotated)))))
    read = await tenant.client(GET, {"id": str(ids[0])})
    assert read.data["emailInbox"]["smtp"]["hasPassword"] is True
    async with db.connection() as connection:
        for i, inbox_id in enumerate(ids):
            row = await inboxes.get_inbox(connection, tenant.workspace.id, inbox_id)
            assert not keyring.needs_rotation(row.smtp_password)
            assert (
                inbox_passwords.decrypt_password(keyring, row, "smtp_password").reveal()
                == f"pw-{i}"
            )


async def test_rotation_reports_a_row_it_cannot_decrypt_and_leaves_it(tenant, db, keyring):
    one = (await tenant.client(CREATE, {"input": minimal_input("keep1@example.com")})).data[
        "createEmailInbox"
    ]["inbox"]
    two = (await tenant.client(CREATE, {"input": minimal_input("keep2@example.com")})).data[
        "createEmailInbox"
    ]["inbox"]
    # A ciphertext bound to another row: no key in the ring can open it here.
    async with db.connection() as connection, connection.transaction():
        stolen = await connection.fetchval(
            "SELECT smtp_password FROM email_inbox WHERE id = $1", uuid.UUID(one["id"])
        )
        await connection.execute(
            "UPDATE email_inbox SET smtp_password = $2 WHERE id = $1", uuid.UUID(two["id"]), stolen
        )
    ring = KeyRing.parse(
        ",".join(f"{k}:{v}" for k, v in _specs(keyring)) + "," + KeyRing.generate_spec("test3")
    )
    try:
        _, reported = await rotate_all(db, ring)
        assert uuid.UUID(two["id"]) in reported
        assert uuid.UUID(one["id"]) not in reported
        async with db.connection() as connection:
            row = await inboxes.get_inbox(connection, tenant.workspace.id, uuid.UUID(two["id"]))
        assert row.smtp_password == stolen  # left exactly as it was
    finally:
        await rotate_all(db, KeyRing.parse(",".join(f"{k}:{v}" for k, v in reversed(_specs(ring)))))


async def test_a_batch_goes_past_current_and_unreadable_rows_and_ends_at_its_last(
    pg_server, certs, keyring
):
    # A database of its own, so the batches hold exactly these rows, in id order: a row
    # already under the newest key and an unreadable one first, then two to re-encrypt.
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as stack:
        tenant = await stack.tenant()
        ids = []
        for i in range(4):
            created = await tenant.client(CREATE, {"input": minimal_input(f"batch{i}@example.com")})
            ids.append(uuid.UUID(created.data["createEmailInbox"]["inbox"]["id"]))
        current, broken, first, last = sorted(ids)
        ring = KeyRing.parse(
            ",".join(f"{k}:{v}" for k, v in _specs(keyring)) + "," + KeyRing.generate_spec("b4")
        )
        async with stack.db.connection() as connection:
            row = await inboxes.get_inbox(connection, tenant.workspace.id, current)
            for column in inbox_passwords.PASSWORD_COLUMNS:
                aad = associated_data("email_inbox", column, current)
                again = ring.encrypt(keyring.decrypt(getattr(row, column), aad).reveal(), aad)
                await connection.execute(
                    f"UPDATE email_inbox SET {column} = $2 WHERE id = $1",
                    current,
                    again,
                )
            stolen = await connection.fetchval(
                "SELECT smtp_password FROM email_inbox WHERE id = $1", first
            )
            await connection.execute(
                "UPDATE email_inbox SET smtp_password = $2 WHERE id = $1", broken, stolen
            )
            batches = [
                await inbox_passwords.rotate_secrets(connection, ring, after=after, batch_size=3)
                for after in (None, first, last)
            ]
            rows = {
                r.id: r
                for r in await connection.fetch(
                    f"SELECT {INBOX_COLUMNS} FROM email_inbox", record_class=InboxRow
                )
            }
    assert batches == [
        inbox_passwords.RotationBatch(1, [broken], first),
        inbox_passwords.RotationBatch(1, [], last),
        inbox_passwords.RotationBatch(0, [], None),
    ]
    assert rows[broken].smtp_password == stolen  # left as it was
    for inbox_id in (current, first, last):
        for column in inbox_passwords.PASSWORD_COLUMNS:
            assert key_id_of(getattr(rows[inbox_id], column)) == "b4", (inbox_id, column)
        smtp = inbox_passwords.decrypt_password(ring, rows[inbox_id], "smtp_password")
        assert smtp.reveal() == "app-password-1"


async def _readability(db, ring: KeyRing) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    readable, unreadable = set(), set()
    async with db.connection() as connection:
        rows = await connection.fetch(
            f"SELECT {INBOX_COLUMNS} FROM email_inbox", record_class=InboxRow
        )
        for row in rows:
            try:
                for column in inbox_passwords.PASSWORD_COLUMNS:
                    inbox_passwords.decrypt_password(ring, row, column)
            except DecryptionError:
                unreadable.add(row.id)
            else:
                readable.add(row.id)
    return readable, unreadable


async def rotate_all(db, ring: KeyRing) -> tuple[int, list[uuid.UUID]]:
    total, unreadable, after = 0, [], None
    while True:
        async with db.connection() as connection:
            batch = await inbox_passwords.rotate_secrets(
                connection, ring, after=after, batch_size=2
            )
        total += batch.rotated
        unreadable += batch.unreadable
        if batch.last_id is None:
            return total, unreadable
        after = batch.last_id


def _specs(ring: KeyRing) -> list[tuple[str, str]]:
    import base64

    return [
        (kid, base64.b64encode(ring._keys[kid]).decode())  # test-only access to raw keys
        for kid in ring.key_ids
    ]
