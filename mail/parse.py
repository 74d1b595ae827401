"""A fetched message, parsed with the standard library (``email``, ``policy.default``).

Whatever a sender put in a message, parsing returns: what could be read is kept, and the first
thing that could not be is reported in ``parse_error``, so the message is stored once with its
error and never fetched again. HTML bodies are sanitised with nh3, as signatures are.

Attachments are described in ``attachments`` (name, type, size, content-id) and their exact
decoded bytes kept beside them in ``attachment_contents`` (same order), except for one larger
than ``max_attachment_bytes``: it is described, marked ``stored: False`` with the reason, and
its bytes are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

from mail.header_classes import HEADER_CLASSES
from mail.markup import sanitize_html

# policy.default, its header classes kept (mail.header_classes).
_POLICY = policy.default.clone(header_factory=HEADER_CLASSES)

MAX_HEADER_TEXT = 2_000  # one header's stored text (subject, ids); the rest is cut


@dataclass(slots=True)
class ParsedMessage:
    message_id: str | None = None
    in_reply_to: str | None = None
    reference_ids: list[str] = field(default_factory=list)
    subject: str | None = None
    from_address: dict[str, Any] | None = None
    to_addresses: list[dict[str, Any]] = field(default_factory=list)
    cc_addresses: list[dict[str, Any]] = field(default_factory=list)
    reply_to_addresses: list[dict[str, Any]] = field(default_factory=list)
    sent_at: datetime | None = None
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # The decoded bytes of each attachment, in order; None where they were not kept.
    attachment_contents: list[bytes | None] = field(default_factory=list)
    parse_error: str | None = None


def _clean(value: object, limit: int | None = MAX_HEADER_TEXT) -> str | None:
    """Text Postgres can store (no NUL), stripped, cut at ``limit``; None when empty."""
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    if limit is not None:
        text = text[:limit]
    return text or None


def _addresses(message: Message, name: str) -> list[dict[str, Any]]:
    header = message[name]
    if header is None:
        return []
    return [
        {"name": _clean(a.display_name), "address": _clean(a.addr_spec) or ""}
        for a in getattr(header, "addresses", ())
    ]


def _date(message: Message) -> datetime | None:
    header = message["date"]
    moment = getattr(header, "datetime", None) if header is not None else None
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _headers(message: Message, parsed: ParsedMessage) -> None:
    parsed.message_id = _clean(message["message-id"])
    parsed.in_reply_to = _clean(message["in-reply-to"])
    references = _clean(message["references"], None) or ""
    parsed.reference_ids = [r[:MAX_HEADER_TEXT] for r in references.split()][:100]
    parsed.subject = _clean(message["subject"])
    senders = _addresses(message, "from")
    parsed.from_address = senders[0] if senders else None
    parsed.to_addresses = _addresses(message, "to")
    parsed.cc_addresses = _addresses(message, "cc")
    parsed.reply_to_addresses = _addresses(message, "reply-to")
    parsed.sent_at = _date(message)


def _bodies(message: EmailMessage, parsed: ParsedMessage) -> None:
    text = message.get_body(preferencelist=("plain",))
    if text is not None:
        parsed.text_body = _clean(text.get_content(), None)
    html = message.get_body(preferencelist=("html",))
    if html is not None:
        markup = _clean(html.get_content(), None)
        parsed.html_body = sanitize_html(markup) if markup else None


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    if disposition == "inline" and part.get_filename():
        return True
    # An image of an HTML body (multipart/related), named by its Content-ID only.
    return part["content-id"] is not None and part.get_content_maintype() != "text"


def _attachments(message: EmailMessage, parsed: ParsedMessage, max_bytes: int) -> None:
    for part in message.walk():
        if part.is_multipart() or not _is_attachment(part):
            continue
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        described: dict[str, Any] = {
            "filename": _clean(part.get_filename()),
            "content_type": part.get_content_type(),
            "size": len(content),
            "content_id": _clean(part["content-id"]),
            "stored": len(content) <= max_bytes,
        }
        if not described["stored"]:
            described["not_stored_reason"] = (
                f"The attachment ({len(content)} bytes) is larger than the limit of "
                f"{max_bytes} bytes (INBOXD_RECEIVING_MAX_ATTACHMENT_BYTES): only its "
                "description was stored."
            )
        parsed.attachments.append(described)
        parsed.attachment_contents.append(content if described["stored"] else None)


def parse_message(
    raw: bytes, *, headers_only: bool = False, max_attachment_bytes: int = 10 * 1024 * 1024
) -> ParsedMessage:
    """Parse ``raw`` (a whole message, or only its header when ``headers_only``); attachments
    larger than ``max_attachment_bytes`` are described but their bytes not kept."""
    parsed = ParsedMessage()
    message = message_from_bytes(raw, policy=_POLICY)
    assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage
    steps: list[tuple[str, Callable[[], None]]] = [("headers", lambda: _headers(message, parsed))]
    if not headers_only:
        steps += [
            ("bodies", lambda: _bodies(message, parsed)),
            ("attachments", lambda: _attachments(message, parsed, max_attachment_bytes)),
        ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # any sender-made defect: keep what was read, say what broke
            parsed.parse_error = f"{name}: {type(exc).__name__}: {exc}"[:500]
            break
    return parsed
