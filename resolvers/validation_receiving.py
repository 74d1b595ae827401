"""Receiving settings from the create and update inputs: folders and backfill checked, the
columns they write (``receiving_*``) returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resolvers.validation_issues import Problems

MAX_FOLDERS = 20
MAX_FOLDER_NAME = 200
MAX_BACKFILL_DAYS = 90


def _folders(value: Any, problems: Problems) -> list[str]:
    folders: list[str] = []
    for index, raw in enumerate(value or []):
        name = str(raw).strip()
        if not name or len(name) > MAX_FOLDER_NAME or any(ord(ch) < 32 for ch in name):
            problems.error(
                f"receiving.folders[{index}]",
                f"must be a folder name of 1 to {MAX_FOLDER_NAME} printable characters",
            )
        elif name not in folders:
            folders.append(name)
    if not folders:
        problems.error("receiving.folders", "must name at least one folder")
    if len(folders) > MAX_FOLDERS:
        problems.error("receiving.folders", f"at most {MAX_FOLDERS} folders")
    return folders


def normalize_receiving(
    data: Mapping[str, Any] | None, problems: Problems, *, create: bool
) -> dict[str, Any]:
    """The ``receiving_*`` columns to write: every one on create (defaults filled in), only
    those sent on update."""
    data = data or {}
    values: dict[str, Any] = {}
    if create:
        values = {
            "receiving_enabled": True,
            "receiving_folders": ["INBOX"],
            "receiving_backfill_days": 0,
        }
    if data.get("enabled") is not None:
        values["receiving_enabled"] = bool(data["enabled"])
    elif "enabled" in data:
        problems.error("receiving.enabled", "must be true or false, not null")
    if data.get("folders") is not None:
        values["receiving_folders"] = _folders(data["folders"], problems)
    if data.get("backfill_days") is not None:
        days = int(data["backfill_days"])
        if not 0 <= days <= MAX_BACKFILL_DAYS:
            problems.error("receiving.backfillDays", f"must be between 0 and {MAX_BACKFILL_DAYS}")
        values["receiving_backfill_days"] = days
    return values
