"""``inboxd rotate-keys`` as an operator runs it: it names the rows it could not re-encrypt."""

from __future__ import annotations

import base64
import uuid

import pytest

from storage.secrets import KeyRing
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
