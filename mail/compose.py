"""An outgoing message as the exact bytes that go after SMTP DATA.

Guarantees:

- Every header is built by the standard library's header registry (``EmailMessage`` with
  ``policy.SMTP``: CRLF line endings, long lines folded, non-ASCII text in RFC 2047 encoded
  words, attachment names in RFC 2231 parameters); no header text is written by hand.
- No display name, subject, header value or address that reads as holding a control
  character (encoded words decoded) reaches a header: ``ComposeError`` names the field. The
  built bytes are checked once more (``mail.message.check_headers``): they carry exactly the
  headers written, each on its own line.
- Bcc recipients are in ``envelope_recipients`` and in no header.
- The HTML body is sanitised with nh3 as signatures are (``mail.markup``); the signature is
  appended to both parts ("-- " separator in the text part).
- ``In-Reply-To``/``References`` thread a reply; References keep the first and the most
  recent ids when there are too many (RFC 5322 section 3.6.4 practice).
- The bytes are 7-bit ASCII, so any server takes them: bodies in quoted-printable or base64
  where needed, internationalised domains in IDNA (here and in ``envelope_recipients``).
- The result is at most ``max_bytes`` long, else ``ComposeError`` names "attachments" (or
  the body when there are none).
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from io import BytesIO

from mail import compose_rules as rules
from mail.compose_rules import ALLOWED_HEADERS, ComposeError
from mail.header_classes import HEADER_CLASSES
from mail.markup import html_to_text, sanitize_html, text_to_html
from mail.message import UnsafeHeader, check_headers

__all__ = [
    "ALLOWED_HEADERS",
    "ComposeError",
    "MailAttachment",
    "Outgoing",
    "check",
    "compose",
    "envelope_recipients",
    "make_message_id",
    "size_bound",
]

# References beyond this are trimmed to the first and the most recent ones.
MAX_REFERENCES = 20
_SEPARATOR = "\n-- \n"
# Bodies always 7-bit: a server without 8BITMIME takes them as they are.
_POLICY = policy.SMTP.clone(cte_type="7bit", header_factory=HEADER_CLASSES)
_FALLBACK_DOMAIN = "inboxd.invalid"


@dataclass(frozen=True, slots=True)
class MailAttachment:
    filename: str
    content_type: str  # "type/subtype"
    content: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    from_address: str  # the inbox's address
    from_name: str | None  # displayName or senderInfo
    to: list[tuple[str | None, str]]  # (display name or None, address)
    cc: list[tuple[str | None, str]]
    bcc: list[tuple[str | None, str]]  # envelope only, never a header
    subject: str
    text: str | None
    html: str | None  # sanitised here, as signatures are
    signature_text: str | None
    signature_html: str | None
    in_reply_to: str | None  # a Message-ID "<...>"
    references: list[str]  # Message-IDs, oldest first
    headers: dict[str, str]  # allow-listed by the caller; checked again here
    attachments: list[MailAttachment]
    message_id: str  # "<...@domain>", made by make_message_id
    date: datetime


def make_message_id(domain: str) -> str:
    """A new, unguessable Message-ID at ``domain`` (IDNA-encoded; a domain that is not one
    gives "inboxd.invalid"). Built by hand: email.utils.make_msgid() looks up this host."""
    name = domain.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        name = _FALLBACK_DOMAIN
    labels = name.split(".")
    if not name or not all(label and label.replace("-", "").isalnum() for label in labels):
        name = _FALLBACK_DOMAIN
    return f"<{secrets.token_hex(16)}@{name}>"


def envelope_recipients(outgoing: Outgoing) -> list[str]:
    """Every To, Cc and Bcc address once (compared without regard to case), in that order,
    domains in IDNA as in the headers."""
    seen: set[str] = set()
    found: list[str] = []
    for _, raw in [*outgoing.to, *outgoing.cc, *outgoing.bcc]:
        local, at, domain = raw.strip().rpartition("@")
        addr = f"{local}{at}{rules.ascii_domain(domain) or domain}" if at else raw.strip()
        if addr.lower() not in seen:
            seen.add(addr.lower())
            found.append(addr)
    return found


@dataclass(frozen=True, slots=True)
class _Fields:
    """Every header value and attachment name of a message, checked by the rules."""

    sender: Address
    to: list[Address]
    cc: list[Address]
    subject: str
    extra: dict[str, str | list[Address]]
    message_id: str
    in_reply_to: str | None
    references: list[str]
    attachments: list[tuple[str, str, str]]  # (filename, maintype, subtype)


# Remembered per inbox (up to 1,024 inboxes), as every message of an inbox carries its
# signature and From: the signature cleaned by nh3, the address parsed by the header registry.
@functools.lru_cache(maxsize=1024)
def _clean_signature(markup: str) -> str | None:
    return sanitize_html(markup) or None


_sender = functools.lru_cache(maxsize=1024)(rules.address)


def _check_fields(outgoing: Outgoing, max_bytes: int) -> _Fields:
    encoded = sum((len(a.content) + 2) // 3 * 4 for a in outgoing.attachments)
    if encoded > max_bytes:  # refused before any encoding work
        raise _too_large(outgoing, encoded, max_bytes)
    sender = _sender(outgoing.from_name, outgoing.from_address, "from")
    to = _mailboxes(outgoing.to, "to")
    cc = _mailboxes(outgoing.cc, "cc")
    _mailboxes(outgoing.bcc, "bcc")  # checked, never written
    subject = rules.header_text(outgoing.subject, "subject", limit=rules.MAX_SUBJECT)
    extra = _extra_headers(outgoing.headers)
    message_id = rules.message_id(outgoing.message_id, "messageId")
    in_reply_to = (
        rules.message_id(outgoing.in_reply_to, "inReplyTo") if outgoing.in_reply_to else None
    )
    references = _references(outgoing.references, in_reply_to)
    attachments = [
        _attachment_type(a, f"attachments[{i}]") for i, a in enumerate(outgoing.attachments)
    ]
    return _Fields(sender, to, cc, subject, extra, message_id, in_reply_to, references, attachments)


def check(outgoing: Outgoing, *, max_bytes: int) -> None:
    """Raise the ComposeError ``compose`` would raise, if any, composing only when the
    message may be over ``max_bytes``: when ``size_bound`` is within it, so is the message."""
    _check_fields(outgoing, max_bytes)
    if size_bound(outgoing) > max_bytes:
        compose(outgoing, max_bytes=max_bytes)


# An upper bound of the composed size, in bytes per byte of input. A body part is sent as
# 7bit (CRLF for LF: at most 2), quoted-printable (=XX for a byte, a soft break "=\r\n" every
# 76 characters: under 3.2) or base64 (under 1.4); a header's text in encoded words (q or
# base64 of UTF-8, "=?utf-8?q?" and "?=" around each word, folded lines) stays under 5.
_BODY_FACTOR = 4
_HEADER_FACTOR = 8
_PER_HEADER = 128  # the name, ": ", CRLF, an address's brackets and quotes
_PER_PART = 512  # a MIME part's headers and boundary lines
_FIXED = 2048  # Date, MIME-Version, the multipart headers and closing boundaries


def size_bound(outgoing: Outgoing) -> int:
    """An upper bound of ``len(compose(outgoing, ...))`` for a message that composes,
    computed without building it (``tests/mail/test_compose_size.py`` holds it to that)."""
    texts = [
        outgoing.from_name or "",
        outgoing.from_address,
        outgoing.subject,
        outgoing.message_id,
        outgoing.in_reply_to or "",
        *(f"{name or ''}{address}" for name, address in [*outgoing.to, *outgoing.cc]),
        *outgoing.references,
        *(f"{name}{value}" for name, value in outgoing.headers.items()),
    ]
    headers = sum(_HEADER_FACTOR * len(t.encode()) + _PER_HEADER for t in texts)
    text, markup = _bodies(outgoing)
    bodies = sum(
        _BODY_FACTOR * len(body.encode()) + _PER_PART for body in (text, markup) if body is not None
    )
    attached = sum(
        (len(a.content) + 2) // 3 * 4 * 78 // 76
        + _HEADER_FACTOR * len((a.filename + a.content_type).encode())
        + _PER_PART
        for a in outgoing.attachments
    )
    return _FIXED + headers + bodies + attached


def compose(outgoing: Outgoing, *, max_bytes: int) -> bytes:
    """The message as the bytes to send after DATA. Raises ComposeError."""
    fields = _check_fields(outgoing, max_bytes)
    message = EmailMessage(policy=_POLICY)
    message["Date"] = outgoing.date if outgoing.date.tzinfo else outgoing.date.replace(tzinfo=UTC)
    message["From"] = fields.sender
    if fields.to:
        message["To"] = fields.to
    if fields.cc:
        message["Cc"] = fields.cc
    message["Subject"] = fields.subject
    message["Message-ID"] = fields.message_id
    if fields.in_reply_to:
        message["In-Reply-To"] = fields.in_reply_to
    if fields.references:
        message["References"] = " ".join(fields.references)
    for name, value in fields.extra.items():
        message[name] = value
    _set_bodies(message, outgoing)
    for attachment, (filename, maintype, subtype) in zip(
        outgoing.attachments, fields.attachments, strict=True
    ):
        message.add_attachment(attachment.content, maintype, subtype, filename=filename)
    for part in message.walk():
        if part is not message:  # the library gives each part a MIME-Version of its own
            del part["MIME-Version"]

    out = BytesIO()
    BytesGenerator(out, policy=message.policy).flatten(message)
    data = out.getvalue()
    try:
        check_headers(data, list(message.keys()))
    except UnsafeHeader as exc:  # a case the rules above missed: refused all the same
        raise ComposeError(
            "headers", f"the message's headers would not be sent as written ({exc})"
        ) from None
    if len(data) > max_bytes:
        raise _too_large(outgoing, len(data), max_bytes)
    return data


def _mailboxes(entries: list[tuple[str | None, str]], field: str) -> list[Address]:
    return [rules.address(name, addr, f"{field}[{i}]") for i, (name, addr) in enumerate(entries)]


def _extra_headers(headers: dict[str, str]) -> dict[str, str | list[Address]]:
    built: dict[str, str | list[Address]] = {}
    for name, value in headers.items():
        field = f"headers.{name}"
        canonical = rules.header_name(name, field)
        if canonical in built:
            raise ComposeError(field, "is given twice (header names ignore case)")
        if canonical.lower() == "reply-to":
            built[canonical] = rules.reply_to(value, field)
        else:
            built[canonical] = rules.header_text(value, field)
    return built


def _references(ids: list[str], in_reply_to: str | None) -> list[str]:
    """The thread's ids, oldest first, each once, ending with the replied-to message."""
    found: list[str] = []
    for index, value in enumerate(ids):
        rules.message_id(value, f"references[{index}]")
        if value not in found:
            found.append(value)
    if in_reply_to is not None:
        if in_reply_to in found:
            found.remove(in_reply_to)
        found.append(in_reply_to)
    if len(found) > MAX_REFERENCES:
        # The first names the thread's root; the last ones its recent branch.
        found = [found[0], *found[-(MAX_REFERENCES - 1) :]]
    return found


def _bodies(outgoing: Outgoing) -> tuple[str | None, str | None]:
    """The text and HTML parts as sent (either may be absent), the signature appended."""
    text, markup = outgoing.text, outgoing.html
    signature_html = _clean_signature(outgoing.signature_html or "")
    signature_text = outgoing.signature_text or (
        html_to_text(signature_html) if signature_html else None
    )
    if markup is not None:
        markup = sanitize_html(markup)
        if signature_html is None and signature_text:
            signature_html = text_to_html(signature_text)
        if signature_html:
            markup = f"{markup}\n<div>-- <br>\n{signature_html}</div>\n"
    if text is not None or markup is None:
        text = text or ""
        if signature_text:
            text = f"{text}{_SEPARATOR}{signature_text}"
        return text, markup
    return None, markup


def _set_bodies(message: EmailMessage, outgoing: Outgoing) -> None:
    text, markup = _bodies(outgoing)
    if text is not None:
        message.set_content(text)
        if markup is not None:
            message.add_alternative(markup, subtype="html")
    elif markup is not None:
        message.set_content(markup, subtype="html")


def _attachment_type(attachment: MailAttachment, field: str) -> tuple[str, str, str]:
    name = rules.header_text(attachment.filename.strip(), f"{field}.filename", limit=255)
    if not name:
        raise ComposeError(f"{field}.filename", "must not be blank")
    maintype, subtype = rules.content_type(attachment.content_type, f"{field}.contentType")
    return name, maintype, subtype


def _too_large(outgoing: Outgoing, size: int, limit: int) -> ComposeError:
    field = "attachments" if outgoing.attachments else ("html" if outgoing.html else "text")
    return ComposeError(
        field,
        f"the message would be {size} bytes, over the limit of {limit} bytes; "
        + ("send smaller or fewer attachments" if outgoing.attachments else "shorten it"),
    )
