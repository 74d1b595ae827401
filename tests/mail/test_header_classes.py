"""mail.header_classes keeps the classes the standard library's header registry makes: what
inboxd composes and parses with it must be exactly what the library gives with its own."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage

from mail.header_classes import HEADER_CLASSES, KeptHeaderClasses

HEADERS: list[tuple[str, object]] = [
    ("From", Address("Zoë Ünïcode-Sender, Sales & Marketing", "zoe", "example.test")),
    ("To", [Address("Rita Receiver", "rita", "example.test"), Address("", "bob", "x.test")]),
    ("Cc", "Carl <carl@example.test>, =?utf-8?q?J=C3=BCrgen?= <j@example.test>"),
    ("Subject", "Quarterly numbers, a subject long enough to be folded over more than one line "
                "of the message header: " + "word " * 30),
    ("Date", "Mon, 07 Dec 2026 12:00:00 +0000"),
    ("Message-ID", "<abc.123@example.test>"),
    ("In-Reply-To", "<parent@example.test>"),
    ("References", "<root@example.test> <parent@example.test>"),
    ("List-Unsubscribe", "<mailto:unsubscribe@example.test>"),
    ("X-Campaign-Id", "spring-2027"),
]  # fmt: skip

RAW = [
    b'From: =?utf-8?b?WsO2ZQ==?= <z@example.test>\r\nTo: a@example.test, "B, C" <b@x.test>\r\n'
    b"Subject: =?utf-8?q?hello=0D=0ABcc=3A_evil=40x.test?=\r\nDate: Tue, 1 Dec 2026 10:00:00 "
    b"+0100\r\nMessage-ID: <m1@example.test>\r\nX-Odd-Header: value\r\nX-Other: v2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n",
    b"From: broken <<not an address\r\nTo: ;;;\r\nDate: yesterday\r\nSubject: \xff\xfe raw\r\n"
    b"References: <a@b> garbage <c@d>\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--zz--\r\n",
]


def build(registry: HeaderRegistry) -> bytes:
    message = EmailMessage(policy=policy.SMTP.clone(header_factory=registry))
    for name, value in HEADERS:
        message[name] = value
    message.set_content("Hello Zoë,\n\n" + "Line of text. " * 20)
    message.add_attachment(b"\x00\x01binary", "application", "octet-stream", filename="d.bin")
    message.set_boundary("fixed-boundary")  # the library picks a random one otherwise
    return message.as_bytes()


def test_a_message_built_with_kept_classes_is_the_librarys_byte_for_byte() -> None:
    assert build(KeptHeaderClasses()) == build(HeaderRegistry())
    # and again on a registry that has made its classes already
    assert build(HEADER_CLASSES) == build(HeaderRegistry())


def test_a_message_parsed_with_kept_classes_reads_as_the_librarys() -> None:
    for raw in RAW:
        ours = message_from_bytes(raw, policy=policy.default.clone(header_factory=HEADER_CLASSES))
        theirs = message_from_bytes(raw, policy=policy.default)
        assert ours.keys() == theirs.keys()
        for (name, mine), (_, stock) in zip(ours.items(), theirs.items(), strict=True):
            assert str(mine) == str(stock), name
            assert type(mine).__mro__[1:] == type(stock).__mro__[1:], name
            assert [type(d) for d in mine.defects] == [type(d) for d in stock.defects], name
        assert ours.as_bytes() == theirs.as_bytes()


def test_one_class_per_registry_entry_whatever_the_names() -> None:
    registry = KeptHeaderClasses()
    for n in range(200):  # arbitrary names all take the default class: one made for them
        registry(f"X-Header-{n}", "v")
    assert len(registry._made) == 1
    assert registry["X-Header-1"] is registry["x-header-2"]
    assert registry["Subject"] is not registry["To"]
    assert len(registry._made) == 3


def test_mapping_a_name_anew_takes_effect() -> None:
    registry = KeptHeaderClasses()
    before = registry["X-Special"]
    registry.map_to_type("X-Special", registry["Subject"].__mro__[1])
    assert registry["X-Special"] is not before
