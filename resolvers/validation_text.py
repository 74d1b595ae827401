"""Rules for the free-text fields of an inbox: lengths, header-safe names, signature HTML,
tags, DKIM selectors and the daily send limit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mail.markup import sanitize_html
from mail.message import has_control_characters
from resolvers.validation_issues import Problems, camel

MAX_LENGTHS = {
    "name": 200,
    "display_name": 200,
    "description": 2000,
    "sender_info": 500,
    "department": 100,
    "signature": 20_000,
    "last_message_id": 998,
}
# Texts that go into (or are offered for) a mail header: no control character in any
# reading of them, RFC 2047 encoded words decoded (issue 11, header injection).
HEADER_FIELDS = frozenset({"name", "display_name", "sender_info"})
MAX_TAGS = 20
MAX_TAG_LENGTH = 50
MAX_DKIM_SELECTORS = 10
DAILY_SEND_LIMIT_RANGE = (1, 50)
DEFAULT_DAILY_SEND_LIMIT = 15

_SELECTOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def text_field(
    data: Mapping[str, Any], key: str, problems: Problems, *, required: bool = False
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            problems.error(camel(key), "is required")
        return None
    value = str(value).strip()
    if required and not value:
        problems.error(camel(key), "must not be blank")
        return None
    limit = MAX_LENGTHS.get(key)
    if limit is not None and len(value) > limit:
        problems.error(camel(key), f"must be at most {limit} characters (got {len(value)})")
        return None
    if key in HEADER_FIELDS and has_control_characters(value):
        problems.error(
            camel(key),
            "must not contain line breaks, tabs or other control characters "
            "(also not inside =?...?= encoded words)",
        )
        return None
    return value or None


def clamp_daily_send_limit(value: Any, problems: Problems) -> int:
    if value is None:
        return DEFAULT_DAILY_SEND_LIMIT
    low, high = DAILY_SEND_LIMIT_RANGE
    clamped = min(max(int(value), low), high)
    if clamped != value:
        problems.warn("dailySendLimit", f"{value} is outside {low}..{high}; stored as {clamped}")
    return clamped


def sanitize_signature(value: str | None) -> str | None:
    if value is None:
        return None
    return sanitize_html(value) or None  # the one rule (mail.markup)


def normalize_tags(value: Any, problems: Problems) -> list[str]:
    if value is None:
        return []
    tags: list[str] = []
    for index, raw in enumerate(value):
        tag = str(raw).strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            problems.error(f"tags[{index}]", f"must be at most {MAX_TAG_LENGTH} characters")
            continue
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        problems.error("tags", f"at most {MAX_TAGS} tags (got {len(tags)})")
    return tags


def normalize_selectors(value: Any, problems: Problems) -> list[str]:
    if value is None:
        return []
    selectors = []
    for index, raw in enumerate(value):
        selector = str(raw).strip().lower()
        if not _SELECTOR.match(selector):
            problems.error(f"dkimSelectors[{index}]", "must be a DNS label like 'selector1'")
            continue
        if selector not in selectors:
            selectors.append(selector)
    if len(selectors) > MAX_DKIM_SELECTORS:
        problems.error("dkimSelectors", f"at most {MAX_DKIM_SELECTORS} selectors")
    return selectors
