"""Passwords are one secret type from the GraphQL edge to the encryption call (STYLE.md:
"secrets are a type, not a string"): one class in the whole project, and its value revealed
only where it must be, in a few named places."""

from __future__ import annotations

import ast
from pathlib import Path

from schema.inputs import CreateEmailInboxInput, ServerInput, UpdateEmailInboxInput, provided
from storage.secrets import Secret

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inboxd", "schema", "resolvers", "storage", "mail")
# Where a password is revealed, and why.
REVEALED_IN = {
    "storage/inbox_passwords.py": "encrypt_password: the encryption call",
    "resolvers/validation_addresses.py": "normalize_password: its length and NUL check",
    "mail/smtp_probe.py": "AUTH (a password or an OAuth token): the login itself",
    "mail/imap_probe.py": "LOGIN or AUTHENTICATE (OAuth): the login itself",
    "mail/probe_runner.py": "the login itself, for the round trip",
    "mail/imap_auth.py": "LOGIN or AUTHENTICATE (OAuth): the receiving session's login itself",
    "storage/oauth_apps.py": "the OAuth client secret and PKCE verifier's encryption; state's hash",
    "resolvers/oauth_client.py": "the OAuth provider's requests (secret, code, verifier, tokens)",
    "resolvers/validation_oauth.py": "an OAuth client secret's and access token's length checks",
    "mail/session_pool.py": "a kept session's key: an HMAC of it under a per-process random key",
}


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_passwords_are_secrets_from_the_graphql_edge():
    server = ServerInput(host="mail.example.com", password="hunter2")
    created = provided(CreateEmailInboxInput(email="a@example.com", password="pw", smtp=server))
    assert isinstance(created["password"], Secret)
    assert isinstance(created["smtp"]["password"], Secret)
    assert created["smtp"]["password"].reveal() == "hunter2"
    assert "hunter2" not in repr(created) and "pw'" not in repr(created)
    updated = provided(UpdateEmailInboxInput(imap=ServerInput(password="x")))
    assert isinstance(updated["imap"]["password"], Secret)


def test_one_secret_class_in_the_project():
    """Only storage.secrets.Secret hands out a secret (mail names its shape, SecretLike)."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "reveal" for item in node.body
            ):
                protocol = any(getattr(b, "id", "") == "Protocol" for b in node.bases)
                if not protocol:
                    found.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert found == ["storage/secrets.py:Secret"]


def test_revealed_only_where_it_must_be():
    revealed = set()
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "reveal"
            ):
                revealed.add(str(path.relative_to(ROOT)))
    assert revealed <= set(REVEALED_IN), sorted(revealed - set(REVEALED_IN))
