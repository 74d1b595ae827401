"""The ``inboxd`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from storage.secrets import KeyRing
from tests.schema.fragments import CREATE, minimal_input
from tests.support.processes import embedded_data_dir, wait_postgres_gone

INBOXD = [sys.executable, "-m", "inboxd.cli"]


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        INBOXD + args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXD_")}
    env["INBOXD_LOG_LEVEL"] = "WARNING"
    # The inboxes these tests create name hosts that must never be contacted from a test.
    env["INBOXD_WORKER_ENABLED"] = "false"
    env["INBOXD_DNS_CHECK_ENABLED"] = "false"
    env.update(extra)
    return env


class Served:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*INBOXD, "serve", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            if "press Ctrl+C to stop" in line:
                break
        self.output = "\n".join(self.lines)
        match = re.search(r"serving GraphQL at (http://\S+)", self.output)
        assert match, self.output
        self.url = match.group(1)

    def stop(self) -> str:
        self.proc.terminate()
        rest, _ = self.proc.communicate(timeout=30)
        return rest


@pytest.mark.slow
def test_embedded_first_and_second_start():
    data = embedded_data_dir()
    env = base_env(INBOXD_DATA_DIR=str(data))
    first = Served(env)
    try:
        assert "Generated an encryption key" in first.output
        key_match = re.search(r"admin API key \(shown once, keep it\): (inbx_\S+)", first.output)
        assert key_match, first.output
        key = key_match.group(1)
        response = httpx.post(
            first.url,
            json={"query": CREATE, "variables": {"input": minimal_input("curl@example.com")}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        payload = response.json()["data"]["createEmailInbox"]
        assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    finally:
        first.stop()
    assert (data / "encryption.keys").stat().st_mode & 0o077 == 0
    assert wait_postgres_gone(data) == []  # stopped with its inboxd (SIGTERM)

    second = Served(env)
    try:
        assert "Generated an encryption key" not in second.output
        assert "admin API key (shown once" not in second.output
        assert key not in second.output
        response = httpx.post(
            second.url,
            json={
                "query": "{ emailInboxes(first: 5) { totalCount edges { node { email smtp "
                "{ hasPassword } } } } }"
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        listed = response.json()["data"]["emailInboxes"]
        assert listed["totalCount"] == 1
        assert listed["edges"][0]["node"]["email"] == "curl@example.com"
    finally:
        second.stop()
    assert wait_postgres_gone(data) == []


@pytest.mark.slow
def test_workspace_apikey_and_rotate_keys(database_url: str, keyring: KeyRing, tmp_path: Path):
    keys = ",".join(
        f"{kid}:{__import__('base64').b64encode(keyring._keys[kid]).decode()}"
        for kid in keyring.key_ids
    )
    env = base_env(INBOXD_DATABASE_URL=database_url, INBOXD_ENCRYPTION_KEYS=keys)
    name = f"cli-{os.getpid()}-{secrets.token_hex(4)}"
    created = run(["workspace", "create", name, "--max-inboxes", "3"], env)
    assert created.returncode == 0, created.stderr
    assert "max inboxes 3" in created.stdout
    made = run(
        [
            "apikey",
            "create",
            "--workspace",
            name,
            "--permission",
            "manage-email-inbox",
            "--permission",
            "view-email-inbox",
        ],
        env,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("inbx_")
    missing = run(
        ["apikey", "create", "--workspace", "nope-" + name, "--permission", "view-email-inbox"], env
    )
    assert missing.returncode == 2 and "no workspace" in missing.stderr

    new_spec = KeyRing.generate_spec("cli2")
    rotated = run(["rotate-keys"], {**env, "INBOXD_ENCRYPTION_KEYS": keys + "," + new_spec})
    assert rotated.returncode == 0, rotated.stderr
    assert "under key 'cli2'" in rotated.stdout
    # Back to the session key so the running test server can still read every row.
    back = run(["rotate-keys"], {**env, "INBOXD_ENCRYPTION_KEYS": new_spec + "," + keys})
    assert back.returncode == 0, back.stderr

    revoked = run(["apikey", "revoke", key[:17]], env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked at" in revoked.stdout
    assert key not in created.stdout + revoked.stdout + revoked.stderr


def test_database_url_without_keys_is_a_clear_error():
    result = run(["migrate"], base_env(INBOXD_DATABASE_URL="postgresql://x@127.0.0.1:1/x"))
    assert result.returncode == 2
    assert "INBOXD_ENCRYPTION_KEYS is required" in result.stderr


def test_generate_key_output_parses():
    result = run(["generate-key", "--key-id", "prod1"], base_env())
    ring = KeyRing.parse(result.stdout.strip())
    assert ring.primary_key_id == "prod1"


def test_export_schema_check(tmp_path: Path):
    path = tmp_path / "schema.graphql"
    assert run(["export-schema", "--path", str(path)], base_env()).returncode == 0
    assert run(["export-schema", "--path", str(path), "--check"], base_env()).returncode == 0
    path.write_text("type Query { stale: Int }\n")
    assert run(["export-schema", "--path", str(path), "--check"], base_env()).returncode == 1
