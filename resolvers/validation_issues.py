"""How input validation reports: the fields at fault, by their input path (``smtp.port``,
``tags[0]``), collected and raised together; and the checks every input gets (ids, NUL)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def parse_id(raw: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise InputInvalid([FieldIssue(field, "is not a valid id")]) from exc


def id_or_none(raw: str) -> uuid.UUID | None:
    """``raw`` as an id, or None where it is not one (a read of it finds nothing)."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class FieldIssue:
    field: str
    message: str


class InputInvalid(Exception):
    def __init__(self, issues: list[FieldIssue]) -> None:
        super().__init__("; ".join(f"{i.field}: {i.message}" for i in issues))
        self.issues = issues


@dataclass(slots=True)
class Problems:
    errors: list[FieldIssue] = field(default_factory=list)
    warnings: list[FieldIssue] = field(default_factory=list)

    def error(self, field_name: str, message: str) -> None:
        self.errors.append(FieldIssue(field_name, message))

    def warn(self, field_name: str, message: str) -> None:
        self.warnings.append(FieldIssue(field_name, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise InputInvalid(self.errors)


NUL_MESSAGE = "must not contain NUL characters"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def nul_issues(value: Any, path: str) -> list[FieldIssue]:
    """Every string in ``value`` (input dicts and lists, walked) holding a NUL, by its input
    path: Postgres text cannot store one, so it is the caller's mistake, not an outage."""
    if not _holds_nul(value):  # the commonest input: no path to name
        return []
    if isinstance(value, str):
        return [FieldIssue(path, NUL_MESSAGE)] if "\x00" in value else []
    if isinstance(value, Mapping):
        prefix = f"{path}." if path else ""
        return [i for k, v in value.items() for i in nul_issues(v, prefix + camel(str(k)))]
    if isinstance(value, list | tuple):
        return [i for n, v in enumerate(value) for i in nul_issues(v, f"{path}[{n}]")]
    return []


def refuse_nul(value: Any, path: str = "") -> None:
    issues = nul_issues(value, path)
    if issues:
        raise InputInvalid(issues)
