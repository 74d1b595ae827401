"""``inboxd rotate-keys`` as an operator runs it: it names the rows it could not re-encrypt."""

from __future__ import annotations

import asyncio
import base64
import uuid

import asyncpg
import pytest

from storage.secrets import KeyRing, associated_data, key_id_of
from tests.conftest import verifier_on
from tests.inboxd.test_cli import base_env, run
from tests.schema.fragments import CREATE, minimal_input


def spec(ring: KeyRing) -> str:
    return ",".join(f"{k}:{base64.b64encode(ring._keys[k]).decode()}" for k in ring.key_ids)


@pytest.mark.slow
async def test_rotate_keys_lists_rows_it_cannot_decrypt(tenant, db, keyring, database_url):
    ids = []
    for email in ("cli-ok@example.com", "cli-broken@example.com"):
        created = await tenant.client(CREATE, {"input": minimal_input(email)})
        ids.append(uuid.UUID(created.data["createEmailInbox"]["inbox"]["id"]))
    good, broken = ids
    async with db.connection() as connection, connection.transaction():
        stolen = await connection.fetchval(
            "SELECT imap_password FROM email_inbox WHERE id = $1", good
        )
        await connection.execute(
            "UPDATE email_inbox SET imap_password = $2 WHERE id = $1", broken, stolen
        )
    keys = spec(keyring)
    new = KeyRing.generate_spec("cli-list")
    env = base_env(INBOXD_DATABASE_URL=database_url)
    try:
        rotated = run(["rotate-keys"], {**env, "INBOXD_ENCRYPTION_KEYS": keys + "," + new})
        assert rotated.returncode == 0, rotated.stderr
        assert "could not be decrypted" in rotated.stderr
        assert str(broken) in rotated.stderr
        assert str(good) not in rotated.stderr
        async with db.connection() as connection:
            left = await connection.fetchval(
                "SELECT imap_password FROM email_inbox WHERE id = $1", broken
            )
        assert left == stolen  # untouched
    finally:
        back = run(["rotate-keys"], {**env, "INBOXD_ENCRYPTION_KEYS": new + "," + keys})
        assert back.returncode == 0, back.stderr


# More than two of rotate-keys' batches of 200 rows, so rows sit on both sides of a boundary.
MANY = 430


@pytest.mark.slow
async def test_rotate_keys_covers_every_batch_once(pg_server, certs, keyring):
    # A database of its own: the counts printed must be exactly this test's rows.
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as stack:
        tenant = await stack.tenant(max_inboxes=MANY)
        ids: list[uuid.UUID] = []
        for start in range(0, MANY, 25):
            created = await asyncio.gather(
                *(
                    tenant.client(CREATE, {"input": minimal_input(f"batch{n}@example.com")})
                    for n in range(start, min(start + 25, MANY))
                )
            )
            ids += [uuid.UUID(c.data["createEmailInbox"]["inbox"]["id"]) for c in created]
        ordered = sorted(ids)
        # One unreadable row in each batch: first, middle and last (rows go by id).
        broken = [ordered[0], ordered[250], ordered[-1]]
        url = stack.stack.settings.database_url or ""
        connection = await asyncpg.connect(url)
        try:
            stolen = await connection.fetchval(
                "SELECT imap_password FROM email_inbox WHERE id = $1", ordered[1]
            )
            await connection.execute(
                "UPDATE email_inbox SET imap_password = $1 WHERE id = ANY($2::uuid[])",
                stolen,
                broken,
            )
            new = KeyRing.generate_spec("every-batch")
            ring = KeyRing.parse(f"{spec(keyring)},{new}")
            # A row half under the new key already (its SMTP password changed on a server that
            # had the new key): its other half must still be re-encrypted.
            half = ordered[100]
            await connection.execute(
                "UPDATE email_inbox SET smtp_password = $1 WHERE id = $2",
                ring.encrypt(
                    "app-password-1", associated_data("email_inbox", "smtp_password", half)
                ),
                half,
            )
            rotated = run(
                ["rotate-keys"],
                base_env(INBOXD_DATABASE_URL=url, INBOXD_ENCRYPTION_KEYS=f"{spec(keyring)},{new}"),
            )
            assert rotated.returncode == 0, rotated.stderr
            assert f"re-encrypted {MANY - 3} inboxes under key 'every-batch'" in rotated.stdout
            assert "3 inboxes could not be decrypted" in rotated.stderr
            listed = rotated.stderr.rsplit(": ", 1)[1].strip().split(", ")
            assert sorted(listed) == sorted(str(i) for i in broken)  # each once

            rows = await connection.fetch(
                "SELECT id, smtp_password, imap_password FROM email_inbox"
            )
        finally:
            await connection.close()
    assert len(rows) == MANY
    for row in rows:
        if row["id"] in broken:
            assert row["imap_password"] == stolen  # left exactly as it was
            continue
        for column in ("smtp_password", "imap_password"):
            assert key_id_of(row[column]) == "every-batch", (row["id"], column)
            aad = associated_data("email_inbox", column, row["id"])
            assert ring.decrypt(row[column], aad).reveal() == "app-password-1"
