"""An inbox's sending settings from the create and update inputs: the Sent folder copy
(``sending.copyToSentFolder``) and the time zone of the daily limit (``timeZone``), as the
columns they write."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from resolvers.validation_issues import Problems


@cache
def known_time_zones() -> frozenset[str]:
    """IANA zone names (read once: listing them walks the zone files)."""
    return frozenset(available_timezones())


def normalize_time_zone(value: Any, problems: Problems) -> str | None:
    if value is None:
        return None
    name = str(value).strip()
    if not name or name == "UTC":
        return None  # the default: one way to say it
    if name not in known_time_zones():
        problems.error("timeZone", "is not an IANA time zone name (e.g. Europe/Berlin, UTC)")
        return None
    return name


def normalize_inbox_sending(
    data: Mapping[str, Any], problems: Problems, *, create: bool
) -> dict[str, Any]:
    """The columns to write: every one on create (defaults filled in), only those sent on
    update (null resets to the default)."""
    values: dict[str, Any] = (
        {"sending_copy_to_sent_folder": None, "time_zone": None} if create else {}
    )
    sending: Mapping[str, Any] = data.get("sending") or {}
    if "copy_to_sent_folder" in sending:
        copy = sending["copy_to_sent_folder"]
        values["sending_copy_to_sent_folder"] = None if copy is None else bool(copy)
    if "time_zone" in data:
        values["time_zone"] = normalize_time_zone(data["time_zone"], problems)
    return values
