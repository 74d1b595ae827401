"""Storage speaks one dialect, and an inbox's change is written in one place (issue 10).

Read from the source, as ``tests/test_code_shape.py`` does: a second way to write SQL, or a
second place that bumps an inbox's version or builds an event payload, fails here before it
can drift from the first.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("inboxd", "schema", "resolvers", "storage", "mail")
# The table descriptions (for alembic and the rows test) and alembic itself keep SQLAlchemy.
TABLES_AND_MIGRATIONS = (
    "storage/models.py",
    "storage/models_mail.py",
    "storage/models_oauth.py",
    "storage/migrations/",
)


def application_modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if not name.startswith(TABLES_AND_MIGRATIONS):
                found[name] = ast.parse(path.read_text())
    return found


def string_literals(tree: ast.Module) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_orm_session_or_query_builder_in_application_code():
    imports = []
    for name, tree in application_modules().items():
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            imports += [
                f"{name}: {m}" for m in modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel")
            ]
    assert imports == []


def test_no_storage_function_takes_an_untyped_connection():
    untyped = []
    for name, tree in application_modules().items():
        if not name.startswith("storage/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in node.args.args + node.args.kwonlyargs:
                    annotation = ast.unparse(arg.annotation) if arg.annotation else None
                    if arg.arg == "connection" and annotation in (None, "Any"):
                        untyped.append(f"{name}: {node.name}({arg.arg}: {annotation})")
    assert untyped == []


def test_an_inbox_change_is_written_once():
    # Only storage.inbox_changes updates or deletes an inbox row: every caller gets the version
    # bump, updated_at and the announcement from there.
    writers = {
        name
        for name, tree in application_modules().items()
        for text in string_literals(tree)
        if re.search(r"\b(UPDATE|DELETE FROM)\s+email_inbox\b", text)
    }
    assert writers == {"storage/inbox_changes.py"}


def test_event_payloads_are_built_only_by_storage_events():
    builders = {
        name
        for name, tree in application_modules().items()
        for text in string_literals(tree)
        if "json_build_object" in text or "inboxd_events" in text
    }
    assert builders == {"storage/events.py"}


def test_the_receivers_counters_cannot_carry_a_change():
    # counters() skips the version and the event: only the receiver's counters may go that way.
    from storage import inbox_changes

    with pytest.raises(ValueError, match="status"):
        inbox_changes.counters(
            "inbox", {"last_check_at": "now()", "status": "'FAILED'"}, where="true"
        )
