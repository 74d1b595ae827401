"""Header injection through the test message's display name, judged on the DATA a real SMTP
server (aiosmtpd on 127.0.0.1) received (issue 11 point 2)."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest

from mail.message import (
    check_headers,
    has_control_characters,
    is_control,
    readings,
    safe_display_name,
)
from mail.probes import ProbeSettings, Security
from mail.roundtrip import SUBJECT, run_round_trip
from tests.mail.conftest import USER, USERS, EndpointFactory
from tests.support.mailservers import MailCerts, SmtpMode, SmtpServer

BOB = "bob@example.test"
PAY = "=?utf-8?q?=0D=0AContent-Type=3A_text/html=0D=0A=0D=0A<h1>Pay</h1>?="
INJECTED = "\r\nContent-Type: text/html\r\n\r\n<h1>Pay</h1>"


def b_word(charset: str, text: str) -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


# Display names that decode to control characters, in every shape a mail program decodes.
HOSTILE = {
    "q utf-8 (the report)": PAY,
    "q upper-case markers": "=?UTF-8?Q?=0D=0ABcc=3A_eve@example.test?=",
    "b utf-8": b_word("utf-8", INJECTED),
    "q latin-1": "=?iso-8859-1?q?=0D=0AContent-Type=3A_text/html=0D=0A=0D=0A<h1>Pay</h1>?=",
    "b latin-1": b_word("latin-1", INJECTED),
    "split over words": (
        "=?utf-8?q?=0D?= =?utf-8?q?=0AContent-Type=3A?= =?utf-8?b?IHRleHQvaHRtbA==?="
    ),
    "split mid-text": "Alice =?utf-8?q?=0D=0A?=Bcc: eve@example.test",
    "word inside a word": "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0ABcc=3A_eve=3F=3D?=",
    "tab": "=?utf-8?q?Alice=09Smith?=",
    "NUL": "=?utf-8?q?Alice=00Smith?=",
    "DEL": "=?utf-8?q?Alice=7FSmith?=",
    "U+0085 latin-1": "=?iso-8859-1?q?Alice=85Bcc:_eve@example.test?=",
    "U+0085 utf-8": "=?utf-8?q?Alice=C2=85Bcc:_eve@example.test?=",
    "U+2028": "=?utf-8?q?Alice=E2=80=A8Bcc:_eve@example.test?=",
    "unknown charset": "=?x-unknown?q?=0D=0ABcc=3A_eve@example.test?=",
    "raw CR LF": "Alice\r\nBcc: eve@example.test",
}

EXPECTED_HEADERS = sorted(
    [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "x-inboxd-test",
        "auto-submitted",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    ]
)


def header_names(data: bytes) -> list[str]:
    head = data.partition(b"\r\n\r\n")[0]
    return sorted(
        line.partition(b":")[0].decode().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    )


def decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


async def send_with_name(
    certs: MailCerts, endpoint: EndpointFactory, settings: ProbeSettings, name: str
) -> tuple[str, bytes]:
    """Send the test message to another address (no IMAP needed) and return the code and
    the DATA the server received (b"" if none)."""
    with SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=certs.server_context) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, Security.STARTTLS),
            endpoint(1, Security.TLS),  # never contacted: the message goes to another address
            from_address=USER,
            to_address=BOB,
            smtp_settings=settings,
            imap_settings=settings,
            from_name=name,
        )
        received = smtp.wait_for_messages(1) if result.sent else []
    return result.code, received[0].data if received else b""


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_encoded_display_name_adds_no_header_on_the_wire(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings, name: str
) -> None:
    code, data = await send_with_name(certs, endpoint, probe_settings, name)

    assert code == "OK" and data
    assert header_names(data) == EXPECTED_HEADERS
    body = data.partition(b"\r\n\r\n")[2]
    assert body.startswith(b"This is a test message from inboxd") and b"<h1>" not in body
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "text/plain"
    assert message["Subject"] == SUBJECT
    assert message["Bcc"] is None
    sender = message["From"].addresses[0]
    assert sender.addr_spec == USER
    raw_from = next(v for k, v in message.raw_items() if k.lower() == "from")
    # No reading of what arrived holds a control character: not as sent, not decoded.
    for reading in (sender.display_name, decoded(raw_from), raw_from.replace("\r\n ", " ")):
        assert not any(ch in reading for ch in "\r\n\t\0\x7f\x85\u2028"), reading


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Jörg Müller", "Jörg Müller"),
        ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?=", "Jörg Müller"),
        ('Support "Team" (EU)', 'Support "Team" (EU)'),
        ("Ünïcödé 名前", "Ünïcödé 名前"),
    ],
)
async def test_ordinary_display_names_arrive_as_written(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    name: str,
    shown: str,
) -> None:
    code, data = await send_with_name(certs, endpoint, probe_settings, name)

    assert code == "OK"
    assert header_names(data) == EXPECTED_HEADERS
    message = message_from_bytes(data, policy=policy.default)
    assert message["From"].addresses[0].display_name == shown  # type: ignore[index]


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_every_hostile_shape_reads_as_holding_a_control_character(name: str) -> None:
    assert has_control_characters(name)
    assert not has_control_characters(safe_display_name(name))


def test_a_message_whose_headers_differ_from_what_was_written_is_refused() -> None:
    # What the standard library made of the report's display name before the fix.
    smuggled = (
        b'From: "\r\nContent-Type: text/html\r\n\r\n<h1>Pay</h1>" <alice@example.test>\r\n'
        b"To: bob@example.test\r\nSubject: inboxd test message\r\n\r\nbody\r\n"
    )
    with pytest.raises(Exception, match="header"):
        check_headers(smuggled, ["From", "To", "Subject"])
    encoded = (
        b"From: =?utf-8?q?=0D=0ABcc=3A_eve?= <alice@example.test>\r\nTo: bob@example.test\r\n"
        b"\r\nbody\r\n"
    )
    with pytest.raises(Exception, match="control character"):
        check_headers(encoded, ["From", "To"])
    check_headers(
        b"From: alice@example.test\r\nTo: bob@example.test\r\n\r\nbody\r\n", ["From", "To"]
    )


def test_the_plain_ascii_shortcut_judges_every_character_as_the_full_rule_does():
    # has_control_characters answers printable ASCII without decoding: the same answer.
    texts = [f"ab{chr(code)}cd" for code in range(0x100)]
    texts += ["plain", "=?utf-8?q?a=0Ab?=", "=?utf-8?q?ok?=", "=?", "a\u2028b", "\x85"]
    for text in texts:
        full = any(is_control(ch) for reading in readings(text) for ch in reading)
        assert has_control_characters(text) is full, repr(text)
