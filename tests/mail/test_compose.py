"""Composing outgoing mail (issue 13): the DATA a real SMTP server (aiosmtpd on 127.0.0.1)
received, byte for byte and read back with the standard library's parser; threading
headers, signatures, attachments, Bcc, header injection and the size cap."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from mail.compose import (
    ALLOWED_HEADERS,
    MAX_REFERENCES,
    ComposeError,
    MailAttachment,
    Outgoing,
    compose,
    envelope_recipients,
    make_message_id,
)
from mail.probes import ProbeSettings, Security
from mail.send import send_message
from tests.mail.conftest import USER, EndpointFactory
from tests.mail.test_message_headers import HOSTILE, header_names
from tests.support.mailservers import SmtpServer

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
EVERY_BYTE = bytes(range(256)) * 40


def outgoing(**changes: Any) -> Outgoing:
    base = Outgoing(
        from_address=USER,
        from_name="Alice Example",
        to=[("Bob Builder", "bob@example.test")],
        cc=[(None, "carol@example.test")],
        bcc=[(None, "dave@example.test")],
        subject="Quarterly report",
        text="Hi Bob,\n\nThe report is ready.\n.\nA line with a lone dot above.",
        html=None,
        signature_text="Alice\nExample Ltd",
        signature_html=None,
        in_reply_to="<parent.2@example.test>",
        references=["<root.1@example.test>"],
        headers={"X-Campaign-Id": "q3-2024"},
        attachments=[],
        message_id="<golden.1@example.test>",
        date=WHEN,
    )
    return dataclasses.replace(base, **changes)


GOLDEN = (
    b"Date: Mon, 06 May 2024 07:08:09 +0000\r\n"
    b"From: Alice Example <alice@example.test>\r\n"
    b"To: Bob Builder <bob@example.test>\r\n"
    b"Cc: carol@example.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <golden.1@example.test>\r\n"
    b"In-Reply-To: <parent.2@example.test>\r\n"
    b"References: <root.1@example.test> <parent.2@example.test>\r\n"
    b"X-Campaign-Id: q3-2024\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"Hi Bob,\r\n"
    b"\r\n"
    b"The report is ready.\r\n"
    b".\r\n"
    b"A line with a lone dot above.\r\n"
    b"-- \r\n"
    b"Alice\r\n"
    b"Example Ltd\r\n"
)


async def deliver(
    server: SmtpServer, endpoint: EndpointFactory, settings: ProbeSettings, message: Outgoing
) -> tuple[bytes, list[str]]:
    """Send ``message`` through aiosmtpd; (the DATA it received, its RCPT TO addresses)."""
    data = compose(message, max_bytes=10_000_000)
    outcome = await send_message(
        endpoint(server.port, Security.STARTTLS),
        settings,
        envelope_from=message.from_address,
        recipients=envelope_recipients(message),
        data=data,
    )
    assert outcome.accepted, outcome
    received = server.wait_for_messages(1)[-1]
    assert received.data == data  # what was composed is what arrived, byte for byte
    return received.data, received.rcpt_tos


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_a_plain_message_arrives_exactly_as_composed(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    data, rcpt_tos = await deliver(smtp_starttls, endpoint, probe_settings, outgoing())
    assert data == GOLDEN
    assert rcpt_tos == ["bob@example.test", "carol@example.test", "dave@example.test"]


async def test_a_full_message_reads_back_as_sent(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    message = outgoing(
        from_name="Zoë Ünïcode, Jr.",
        to=[("Bob", "bob@example.test"), (None, "erin@example.test")],
        subject="Report ✓ " + "long words " * 12,
        text="Héllo Bob,\nsee attached.",
        html='<p onclick="steal()">Héllo <b>Bob</b><script>alert(1)</script></p>',
        signature_text=None,
        signature_html='<p>Alice &amp; Co<br>CEO<img src=x onerror="x()"></p>',
        headers={"reply-to": "Help Desk <help@example.test>", "List-Unsubscribe": "<mailto:u@x>"},
        attachments=[
            MailAttachment("résumé «final».pdf", "application/pdf", EVERY_BYTE),
            MailAttachment("notes.txt", "Text/Plain", b"line one\nline two\r\nno end"),
        ],
    )
    data, rcpt_tos = await deliver(smtp_starttls, endpoint, probe_settings, message)
    assert "dave@example.test" in rcpt_tos
    assert b"dave@" not in data and b"bcc" not in data.lower()
    assert all(len(line) <= 78 for line in data.split(b"\r\n")), "folded and encoded"
    assert data.isascii()

    mail = parsed(data)
    assert mail["From"].addresses[0].display_name == "Zoë Ünïcode, Jr."
    assert mail["Subject"] == message.subject
    assert [a.addr_spec for a in mail["To"].addresses] == ["bob@example.test", "erin@example.test"]
    assert mail["Reply-To"].addresses[0].addr_spec == "help@example.test"
    assert mail["List-Unsubscribe"] == "<mailto:u@x>"
    assert mail["Message-ID"] == "<golden.1@example.test>"
    assert mail["MIME-Version"] == "1.0"
    assert mail.get_content_type() == "multipart/mixed"
    assert all(part["MIME-Version"] is None for part in mail.walk() if part is not mail)

    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    # Quoted-printable keeps the wire's CRLF in the decoded text, as mail programs expect.
    assert text.get_content().replace("\r\n", "\n") == (
        "Héllo Bob,\nsee attached.\n-- \nAlice & Co\nCEO\n"
    )
    markup = html.get_content()
    assert "<b>Bob</b>" in markup and "-- <br>" in markup and "Alice &amp; Co<br>CEO" in markup
    for hostile in ("script", "onclick", "onerror", "alert"):
        assert hostile not in markup

    files = list(mail.iter_attachments())
    assert [f.get_filename() for f in files] == ["résumé «final».pdf", "notes.txt"]
    assert [f.get_content_type() for f in files] == ["application/pdf", "text/plain"]
    assert [f.get_payload(decode=True) for f in files] == [
        EVERY_BYTE,
        b"line one\nline two\r\nno end",
    ]
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9" in data  # RFC 2231, by the library


def test_a_reply_threads_under_its_parent() -> None:
    mail = parsed(
        compose(
            outgoing(in_reply_to="<p@x.test>", references=["<r@x.test>", "<m@x.test>"]),
            max_bytes=100_000,
        )
    )
    assert mail["In-Reply-To"] == "<p@x.test>"
    assert mail["References"].split() == ["<r@x.test>", "<m@x.test>", "<p@x.test>"]


def test_long_threads_keep_the_first_and_the_latest_references() -> None:
    ids = [f"<m{n}@x.test>" for n in range(60)]
    mail = parsed(compose(outgoing(in_reply_to=ids[-1], references=ids), max_bytes=100_000))
    kept = mail["References"].split()
    assert len(kept) == MAX_REFERENCES
    assert kept == [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    assert mail["In-Reply-To"] == ids[-1]


def test_a_new_message_has_no_threading_headers() -> None:
    data = compose(outgoing(in_reply_to=None, references=[]), max_bytes=100_000)
    assert "in-reply-to" not in header_names(data) and "references" not in header_names(data)


def test_the_text_signature_reaches_the_html_part_escaped() -> None:
    mail = parsed(
        compose(
            outgoing(html="<p>Hi</p>", signature_text="A <b>&\nB", signature_html=None),
            max_bytes=100_000,
        )
    )
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    assert "A &lt;b&gt;&amp;<br>\r\nB" in html.get_content()


def test_an_html_only_message_is_one_sanitised_part() -> None:
    mail = parsed(compose(outgoing(text=None, html="<p>Hi<script>x</script></p>"), max_bytes=10**5))
    assert mail.get_content_type() == "text/html"
    assert "script" not in mail.get_content()


def test_each_message_has_its_own_sender_and_signature() -> None:
    # The sender's checked address and cleaned signature are remembered by value: the next
    # message with another name or signature shows it, and a refused sender is refused again.
    for name, signature in (("Alice", "One"), ("Bea", "Two"), ("Alice", "One")):
        mail = parsed(
            compose(
                outgoing(
                    from_name=name,
                    html="<p>Hi</p>",
                    signature_html=f"<p>{signature}<script>x</script></p>",
                    signature_text=None,
                ),
                max_bytes=100_000,
            )
        )
        assert mail["From"].addresses[0].display_name == name
        html = mail.get_body(preferencelist=("html",))
        assert html is not None
        assert f"<p>{signature}</p>" in html.get_content()
        assert "script" not in html.get_content()
    for _ in range(2):
        with pytest.raises(ComposeError) as refused:
            compose(outgoing(from_address="nobody"), max_bytes=100_000)
        assert refused.value.field == "from"


FIELDS = {
    "from": lambda v: {"from_name": v},
    "to[1]": lambda v: {"to": [(None, "bob@example.test"), (v, "erin@example.test")]},
    "cc[0]": lambda v: {"cc": [(v, "carol@example.test")]},
    "bcc[0]": lambda v: {"bcc": [(v, "dave@example.test")]},
    "subject": lambda v: {"subject": v},
    "headers.X-Campaign-Id": lambda v: {"headers": {"X-Campaign-Id": v}},
    "headers.Reply-To": lambda v: {"headers": {"Reply-To": f'"{v}" <help@example.test>'}},
    "attachments[0].filename": lambda v: {"attachments": [MailAttachment(v, "text/plain", b"")]},
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_control_characters_are_refused_in_every_header_field(field: str, value: str) -> None:
    with pytest.raises(ComposeError) as refused:
        compose(outgoing(**FIELDS[field](value)), max_bytes=100_000)
    assert refused.value.field == field
    assert "control characters" in refused.value.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to": [(None, "bob@example.test\r\nBcc: eve@example.test")]}, "to[0]"),
        ({"to": [(None, "not an address")]}, "to[0]"),
        ({"cc": [(None, "a@b.test, eve@example.test")]}, "cc[0]"),
        ({"from_address": "nobody"}, "from"),
        ({"headers": {"Bcc": "eve@example.test"}}, "headers.Bcc"),
        ({"headers": {"Content-Type": "text/html"}}, "headers.Content-Type"),
        ({"headers": {"x-priority": "1", "X-Priority": "2"}}, "headers.X-Priority"),
        ({"headers": {"Reply-To": "nobody"}}, "headers.Reply-To"),
        ({"in_reply_to": "<a@b>\r\nBcc: eve@example.test"}, "inReplyTo"),
        ({"references": ["<ok@x>", "no brackets"]}, "references[1]"),
        ({"message_id": "<a b@c>"}, "messageId"),
        ({"attachments": [MailAttachment("a", "text/plain\r\nX: y", b"")]}, "attachments[0]"),
        ({"attachments": [MailAttachment("a", "message/rfc822", b"")]}, "attachments[0]"),
        ({"attachments": [MailAttachment(" ", "text/plain", b"")]}, "attachments[0].filename"),
    ],
)
def test_bad_input_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ComposeError) as refused:
        compose(outgoing(**changes), max_bytes=100_000)
    assert refused.value.field.startswith(field)


def test_encoded_words_that_decode_to_plain_text_are_fine() -> None:
    mail = parsed(compose(outgoing(subject="=?utf-8?q?Caf=C3=A9?= menu"), max_bytes=100_000))
    assert mail["Subject"] == "Café menu"


def test_only_informational_headers_may_be_set() -> None:
    assert {"bcc", "to", "from", "content-type", "message-id", "received"}.isdisjoint(
        ALLOWED_HEADERS
    )
    for name in ALLOWED_HEADERS:
        value = "help@example.test" if name == "reply-to" else "yes"
        assert name in header_names(compose(outgoing(headers={name: value}), max_bytes=10**5))


def test_the_size_cap_names_the_attachments_or_the_body() -> None:
    big = [MailAttachment("big.bin", "application/octet-stream", b"\0" * 30_000)]
    with pytest.raises(ComposeError) as refused:
        compose(outgoing(attachments=big), max_bytes=30_000)
    assert refused.value.field == "attachments" and "30000" in refused.value.message
    with pytest.raises(ComposeError) as refused:
        compose(outgoing(text="x" * 5_000), max_bytes=4_000)
    assert refused.value.field == "text"
    size = len(compose(outgoing(attachments=big), max_bytes=10**6))
    assert len(compose(outgoing(attachments=big), max_bytes=size)) == size  # the cap is exact


def test_envelope_recipients_are_everyone_once() -> None:
    message = outgoing(
        to=[("B", "bob@example.test")],
        cc=[(None, "Bob@Example.test"), (None, "carol@example.test")],
        bcc=[(None, "CAROL@example.test"), (None, " dave@example.test ")],
    )
    assert envelope_recipients(message) == [
        "bob@example.test",
        "carol@example.test",
        "dave@example.test",
    ]


def test_message_ids_are_unique_and_at_the_domain() -> None:
    ids = {make_message_id("Example.TEST") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("<") and i.endswith("@example.test>") for i in ids)
    assert make_message_id("bücher.test").endswith("@xn--bcher-kva.test>")
    assert make_message_id("bad domain\r\n").endswith("@inboxd.invalid>")


def test_international_domains_go_out_in_idna() -> None:
    message = outgoing(to=[("Jörg", "joerg@bücher.test")], bcc=[(None, "eve@bücher.test")])
    data = compose(message, max_bytes=100_000)
    assert data.isascii()
    assert parsed(data)["To"].addresses[0].addr_spec == "joerg@xn--bcher-kva.test"
    assert envelope_recipients(message) == [
        "joerg@xn--bcher-kva.test",
        "carol@example.test",
        "eve@xn--bcher-kva.test",
    ]
    # The standard library cannot write a non-ASCII local part (RFC 6532) at all.
    with pytest.raises(ComposeError) as refused:
        compose(outgoing(cc=[(None, "jörg@example.test")]), max_bytes=100_000)
    assert refused.value.field == "cc[0]"
