"""What ``mail.compose`` accepts in a header, checked before any header is built.

Every text bound for a header is judged by every reading a mail program may make of it
(``mail.message.has_control_characters``: as typed and with RFC 2047 encoded words decoded),
since the standard library's own header parser decodes encoded words while it builds a
header. A refusal is a ``ComposeError`` naming the input field at fault.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address, HeaderRegistry
from typing import Any

from mail.message import has_control_characters

# Lower-case names of the headers a caller may set. Each is informational or a reply hint:
# none changes who receives the message or how it is parsed.
ALLOWED_HEADERS = frozenset(
    {
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "auto-submitted",
        "precedence",
        "x-auto-response-suppress",
        "x-priority",
        "importance",
        "x-campaign-id",
        "x-entity-ref-id",
    }
)
# RFC 5322 caps a line at 998 characters; a value this long still fits after its name.
MAX_HEADER_VALUE = 900
MAX_SUBJECT = 998
# A msg-id as found in real mail: printable ASCII without spaces, inside angle brackets.
_MSG_ID = re.compile(r"^<[!-;=?-~]{1,900}>$")
# RFC 6838 restricted names, as "type/subtype".
_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(rf"^{_NAME}/{_NAME}$")
_REGISTRY = HeaderRegistry()


class ComposeError(ValueError):
    """The message cannot be built as asked. ``field`` is the input to blame ("to[2]",
    "headers.X-Foo", "attachments"...), ``message`` says why; neither holds a secret."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def header_text(value: str, field: str, *, limit: int = MAX_HEADER_VALUE) -> str:
    """``value`` if it may go into a header, else ComposeError naming ``field``."""
    if has_control_characters(value):
        raise ComposeError(
            field,
            "must not contain line breaks, tabs or other control characters "
            "(also not inside =?...?= encoded words)",
        )
    if len(value) > limit:
        raise ComposeError(field, f"must be at most {limit} characters (got {len(value)})")
    return value


def address(name: str | None, addr_spec: str, field: str) -> Address:
    """One mailbox, display name and address each checked, the domain made ASCII;
    ComposeError naming ``field``. The standard library refuses a non-ASCII local part."""
    if name is not None:
        header_text(name, field, limit=MAX_HEADER_VALUE)
    header_text(addr_spec, field, limit=320)
    try:
        built = Address(display_name=(name or "").strip(), addr_spec=addr_spec.strip())
    except (HeaderParseError, ValueError, IndexError, TypeError):
        built = None  # the parser raises several kinds for malformed input
    if built is None or not built.username or not built.domain or "@" not in built.addr_spec:
        raise ComposeError(field, f"{addr_spec!r} is not a valid email address")
    domain = ascii_domain(built.domain)
    if domain is None:
        raise ComposeError(field, f"{addr_spec!r} has a domain that cannot be encoded (IDNA)")
    return Address(display_name=built.display_name, username=built.username, domain=domain)


def ascii_domain(domain: str) -> str | None:
    """``domain`` as ASCII (IDNA for an internationalised one), so no server needs SMTPUTF8;
    None when it cannot be encoded."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def reply_to(value: str, field: str) -> list[Address]:
    """A Reply-To value read as the header registry reads it: one or more mailboxes."""
    header_text(value, field)
    parsed: Any = _REGISTRY("reply-to", value)
    addresses = list(parsed.addresses)
    if parsed.defects or not addresses:
        raise ComposeError(field, "must be one or more email addresses")
    return [address(a.display_name or None, a.addr_spec, field) for a in addresses]


def message_id(value: str, field: str) -> str:
    if not _MSG_ID.match(value):
        raise ComposeError(field, f"{value[:100]!r} is not a Message-ID like <id@domain>")
    return value


def content_type(value: str, field: str) -> tuple[str, str]:
    """("type", "subtype") of an attachment's media type, lower-cased."""
    text = value.strip().lower()
    if not _CONTENT_TYPE.match(text):
        raise ComposeError(field, f"{value[:100]!r} is not a media type like 'application/pdf'")
    maintype, _, subtype = text.partition("/")
    if maintype in ("multipart", "message"):
        # Their encoding rules (RFC 2046) forbid the base64 every attachment is sent in.
        raise ComposeError(
            field, f"{text} cannot be attached as is; send it as application/octet-stream"
        )
    return maintype, subtype


def header_name(name: str, field: str) -> str:
    """The canonical spelling of an allowed header ("list-unsubscribe" -> "List-Unsubscribe")."""
    if name.lower() not in ALLOWED_HEADERS:
        allowed = ", ".join(sorted(ALLOWED_HEADERS))
        raise ComposeError(field, f"{name[:100]!r} may not be set; allowed headers: {allowed}")
    return "-".join(part.capitalize() for part in name.lower().split("-"))
