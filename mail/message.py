"""The test message inboxd sends, and the rule for text that may go into a mail header.

Mail programs decode RFC 2047 encoded words (``=?utf-8?q?=0D=0A?=``) wherever they find
them, and so does the standard library's own header parser while it builds a header: a
display name that looks harmless as typed can carry CR, LF or NUL once decoded, and end up
as headers or a body of its own (issue 11). So a text is judged by every reading of it, as
typed and decoded (again, for words that decode to more words), and the message is checked
once more as the bytes that go on the wire.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.header import decode_header
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from io import BytesIO
from typing import Any

SUBJECT = "inboxd test message"
TEST_HEADER = "X-Inboxd-Test"

_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")  # RFC 5322 ftext
_FOLD = re.compile(r"\r?\n[ \t]+")
# Words that decode to more words: a few rounds cover any real name and bound the work.
_DECODE_ROUNDS = 4
_REGISTRY = HeaderRegistry()


def is_control(ch: str) -> bool:
    """C0 (tab included), DEL, C1 (U+0085 among them), and the Unicode line and paragraph
    separators, which str.splitlines() and some mail programs treat as line breaks."""
    return unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029"


def _decode_words(text: str) -> str:
    """``text`` with its encoded words decoded, as email.header reads them; an unknown
    charset is read as Latin-1, so every byte (CR and LF too) shows as a character."""
    parts: list[str] = []
    for chunk, charset in decode_header(text):
        if isinstance(chunk, str):
            parts.append(chunk)
            continue
        try:
            parts.append(chunk.decode(charset or "ascii", errors="replace"))
        except LookupError:
            parts.append(chunk.decode("latin-1"))
    return "".join(parts)


def _registry_readings(text: str) -> list[str]:
    """How the header registry reads ``text``: as unstructured text, and as a display name."""
    readings: list[str] = []
    # The parser raises several kinds for hostile input; a reading it cannot make is none.
    with contextlib.suppress(Exception):
        readings.append(str(_REGISTRY("subject", text)))
    with contextlib.suppress(Exception):
        quoted = str(Address(display_name=text, addr_spec="a@example.invalid"))
        parsed: Any = _REGISTRY("from", quoted)
        readings.extend(address.display_name for address in parsed.addresses)
    return readings


def readings(text: str) -> set[str]:
    """Every way a mail program may read ``text`` in a header."""
    seen = {text}
    frontier = [text]
    for _ in range(_DECODE_ROUNDS):
        found: list[str] = []
        for current in frontier:
            if "=?" not in current:
                continue
            try:
                decoded = [_decode_words(current)]
            except Exception:  # a malformed word: the registry's lenient reading still counts
                decoded = []
            for reading in decoded + _registry_readings(current):
                if reading not in seen:
                    seen.add(reading)
                    found.append(reading)
        if not found:
            break
        frontier = found
    return seen


def has_control_characters(text: str) -> bool:
    """True when ``text``, as typed or with its encoded words decoded, holds a control
    character: such a text must not reach a header."""
    if text.isascii() and text.isprintable() and "=?" not in text:
        return False  # the commonest text: one reading, and no ASCII control (C0, DEL) in it
    return any(is_control(ch) for reading in readings(text) for ch in reading)


def safe_display_name(name: str | None) -> str:
    """``name`` as plain text that cannot add headers: encoded words decoded, control
    characters turned to spaces, whitespace collapsed, and no ``=?`` left for anyone to
    decode again. For names stored before input validation refused such text."""
    text = name or ""
    for _ in range(_DECODE_ROUNDS):
        if "=?" not in text:
            break
        try:
            decoded = _decode_words(text)
        except Exception:
            break
        if decoded == text:
            break
        text = decoded
    text = " ".join("".join(" " if is_control(ch) else ch for ch in text).split())
    return text.replace("=?", "= ?")


class InvalidAddress(Exception):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnsafeHeader(Exception):
    """The built message would not go out with exactly the headers inboxd wrote."""


@dataclass(frozen=True, slots=True)
class TestMessage:
    data: bytes  # exactly what goes after DATA, checked by check_headers
    smtputf8: bool  # an address is not ASCII: the server must offer SMTPUTF8


def message_id(from_address: str, token: str) -> str:
    domain = from_address.rpartition("@")[2].strip()
    if not _DOMAIN.match(domain):
        domain = "inboxd.invalid"
    # Built by hand: email.utils.make_msgid() would look up this machine's name.
    return f"<inboxd-test.{token}@{domain}>"


def _address(value: str, *, display_name: str = "", field: str, what: str) -> Address:
    try:
        address = Address(display_name=display_name, addr_spec=value.strip())
    except Exception:  # the parser raises several kinds for malformed input
        address = None
    if address is None or not address.username or not address.domain:
        raise InvalidAddress(f"The {what} address {value!r} is not a valid email address.", field)
    return address


def build_message(
    *, from_address: str, to_address: str, from_name: str | None, message_id: str, token: str
) -> TestMessage:
    """The test message as the bytes to send. Raises InvalidAddress for an address that
    cannot be sent with, UnsafeHeader if the headers came out other than written."""
    sender = _address(
        from_address, display_name=safe_display_name(from_name), field="email", what="sender"
    )
    recipient = _address(to_address, field="to", what="recipient")
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = SUBJECT
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message[TEST_HEADER] = token
    # Asks vacation responders and the like not to answer a machine's message (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    # Short ASCII lines, so the body goes as plain 7bit text.
    message.set_content(
        "This is a test message from inboxd, sent to check that this\n"
        "mailbox can send and receive mail.\n"
        "\n"
        "When it is sent to the mailbox itself, inboxd deletes it as soon\n"
        "as it arrives. If you can read it, it went to another address or\n"
        "arrived late: you may delete it.\n",
        cte="7bit",
    )
    smtputf8 = not (from_address.strip() + to_address.strip()).isascii()
    out = BytesIO()
    BytesGenerator(out, policy=policy.SMTPUTF8 if smtputf8 else policy.SMTP).flatten(message)
    data = out.getvalue()
    check_headers(data, list(message.keys()))
    return TestMessage(data, smtputf8)


def check_headers(data: bytes, names: list[str]) -> None:
    """Raise UnsafeHeader unless ``data`` has exactly the headers ``names``, each on its own
    (folded) line, and none whose value reads as holding a control character."""
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        raise UnsafeHeader("the message has no end of headers")
    found: list[str] = []
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise UnsafeHeader("a bare CR, LF or NUL in the headers")
        if line[:1] in (b" ", b"\t") and found:
            continue  # a folded continuation of the header before
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name):
            raise UnsafeHeader("a header line that is not a header")
        found.append(name.decode("ascii").lower())
    if sorted(found) != sorted(name.lower() for name in names):
        raise UnsafeHeader("the headers sent are not the headers written")
    try:
        parsed = BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)
        values = [_FOLD.sub(" ", str(value)) for _, value in parsed.items()]
    except Exception as exc:
        raise UnsafeHeader("the headers cannot be read back") from exc
    if any(has_control_characters(value) for value in values):
        raise UnsafeHeader("a header reads as holding a control character")
