"""Rules for ``sendEmail``'s input: recipients (each named by its path, ``to[1]``), subject,
bodies, the allow-listed headers (``headers.X-Foo``), attachments (``attachments[0].
contentBase64``), when to send and the idempotency key. Every field at fault is reported at
once; the composed message's size is checked by ``resolvers.sending`` with ``mail.compose``."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any

from mail.compose import ALLOWED_HEADERS
from mail.message import has_control_characters
from resolvers.state import SendLimits
from resolvers.validation_addresses import normalize_email
from resolvers.validation_issues import Problems, nul_issues
from storage.outbox import NewAttachment, NewOutgoing

MAX_SUBJECT = 998
MAX_HEADER_VALUE = 998
MAX_FILENAME = 255
MAX_IDEMPOTENCY_KEY = 200
MAX_SEND_AHEAD = timedelta(days=30)
_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def _recipient(raw: Any, path: str, problems: Problems, allow_private: bool) -> dict[str, Any]:
    text = str(raw).strip()
    if has_control_characters(text):
        problems.error(path, "must not contain line breaks or other control characters")
        return {}
    parsed = getaddresses([text])
    if len(parsed) != 1 or not parsed[0][1]:
        problems.error(path, "is not one email address (write a@b.example or Name <a@b.example>)")
        return {}
    name, address = parsed[0]
    before = len(problems.errors)
    normalized = normalize_email(address, path, problems, allow_private=allow_private)
    if normalized is None or len(problems.errors) > before:
        return {}
    return {"name": name.strip() or None, "address": normalized}


def _recipients(
    data: Mapping[str, Any], key: str, problems: Problems, allow_private: bool
) -> list[dict[str, Any]]:
    found = [
        _recipient(raw, f"{key}[{n}]", problems, allow_private)
        for n, raw in enumerate(data.get(key) or [])
    ]
    return [r for r in found if r]


def _headers(value: Any, problems: Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.error("headers", 'must be an object of header names to values: {"X-Tag": "a"}')
        return {}
    headers: dict[str, str] = {}
    for name, raw in value.items():
        path = f"headers.{name}"
        if str(name).lower() not in ALLOWED_HEADERS:
            allowed = ", ".join(sorted(ALLOWED_HEADERS))
            problems.error(path, f"is not a header a caller may set (allowed: {allowed})")
        elif not isinstance(raw, str):
            problems.error(path, "must be a string")
        elif has_control_characters(raw) or len(raw) > MAX_HEADER_VALUE:
            problems.error(
                path, f"must be at most {MAX_HEADER_VALUE} characters, with no line breaks"
            )
        else:
            headers[str(name)] = raw
    return headers


def _attachments(value: Any, problems: Problems) -> list[NewAttachment]:
    found = []
    for n, item in enumerate(value or []):
        path = f"attachments[{n}]"
        filename = str(item.get("filename") or "").strip()
        if not filename or len(filename) > MAX_FILENAME or has_control_characters(filename):
            problems.error(
                f"{path}.filename", f"must be 1 to {MAX_FILENAME} characters, no line breaks"
            )
        content_type = str(item.get("content_type") or "").strip()
        if not _CONTENT_TYPE.fullmatch(content_type):
            problems.error(f"{path}.contentType", 'must be "type/subtype", e.g. application/pdf')
        try:
            content = base64.b64decode(str(item.get("content_base64") or ""), validate=True)
        except (binascii.Error, ValueError):
            problems.error(f"{path}.contentBase64", "is not valid base64 (RFC 4648, padded)")
            continue
        found.append(NewAttachment(filename, content_type.lower(), content))
    return found


def _send_at(value: Any, problems: Problems, now: datetime) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value > now + MAX_SEND_AHEAD:
        problems.error("sendAt", f"must be within {MAX_SEND_AHEAD.days} days from now")
    return value if value > now else None


def normalize_send(
    data: Mapping[str, Any],
    limits: SendLimits,
    *,
    allow_private: bool,
    now: datetime,
) -> NewOutgoing:
    """The input as a message to queue, or InputInvalid naming every field at fault. The
    reply's threading (``replyToMessageId``) is filled in by the caller."""
    problems = Problems()
    problems.errors.extend(nul_issues({k: v for k, v in data.items() if k != "attachments"}, ""))
    problems.raise_if_any()
    to = _recipients(data, "to", problems, allow_private)
    cc = _recipients(data, "cc", problems, allow_private)
    bcc = _recipients(data, "bcc", problems, allow_private)
    given = sum(len(data.get(k) or []) for k in ("to", "cc", "bcc"))
    if given == 0:
        problems.error("to", "give at least one recipient (to, cc or bcc)")
    elif given > limits.max_recipients:
        problems.error(
            "to",
            f"too many recipients: {given} across to, cc and bcc (at most {limits.max_recipients})",
        )
    subject = data.get("subject")
    if subject is not None:
        subject = str(subject).strip()
        if len(subject) > MAX_SUBJECT or has_control_characters(subject):
            problems.error("subject", f"must be at most {MAX_SUBJECT} characters, one line")
    elif data.get("reply_to_message_id") is None:
        problems.error("subject", "is required (unless replying: then it is Re: the original's)")
    text, html = data.get("text"), data.get("html")
    if not text and not html and not data.get("attachments"):
        problems.error("text", "give text, html or both")
    headers = _headers(data.get("headers"), problems)
    attachments = _attachments(data.get("attachments"), problems)
    size = sum(len(a.content) for a in attachments) + len(text or "") + len(html or "")
    if size > limits.max_message_bytes:
        problems.error(
            "attachments",
            f"the message is too large: {size} bytes of content (at most "
            f"{limits.max_message_bytes})",
        )
    send_at = _send_at(data.get("send_at"), problems, now)
    key = data.get("idempotency_key")
    if key is not None:
        key = str(key)
        if not key or len(key) > MAX_IDEMPOTENCY_KEY or has_control_characters(key):
            problems.error(
                "idempotencyKey", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters, one line"
            )
    problems.raise_if_any()
    return NewOutgoing(
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject or "",
        text=text or None,
        html=html or None,
        headers=headers,
        attachments=attachments,
        send_at=send_at,
        idempotency_key=key,
    )


def reply_subject(original: str | None) -> str:
    """``Re: `` before the original subject, unless it has one already."""
    subject = (original or "").strip()
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".rstrip()
