"""``mail.compose.check``: what ``sendEmail`` runs instead of composing every message. It refuses
what ``compose`` refuses, naming the same field, and builds the message only when
``size_bound`` (computed without building it) may be over the cap; so the bound must never be
below the composed size, whatever the text: non-ASCII, long words, bare newlines, markup that
sanitising lengthens, many recipients and attachments."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mail.compose import ComposeError, MailAttachment, Outgoing, check, compose, size_bound
from tests.mail.test_compose import EVERY_BYTE, outgoing

HUGE = 10**9
LONG_WORD = "x" * 3000
MIXED = 'Grüße, 日本語 and émoji 😀 =?utf-8?q?not=20a=20word?= "quoted" \\ ' * 30


def _cases() -> dict[str, Outgoing]:
    names = ["Ünïcödé Näme 😀" * 20, '"Quoted, Name" \\ <odd>' * 20, "x" * 800, None]
    return {
        "plain": outgoing(),
        "non-ascii text": outgoing(text=MIXED * 20, subject=MIXED[:900]),
        "only newlines": outgoing(text="\n" * 20_000, signature_text=None),
        "long lines": outgoing(text=(LONG_WORD + "\n") * 20),
        "non-ascii after ten ascii lines": outgoing(text="a\n" * 10 + "ü" * 40_000),
        "html that sanitising lengthens": outgoing(
            text=None, html="<a>" * 5_000 + '"&<>' * 2_000, signature_html="<p>S & co</p>"
        ),
        "html and text": outgoing(html="<p>" + MIXED * 10 + "</p>"),
        "html only, text signature": outgoing(text=None, html="<b>hi</b>" * 100),
        "long header words": outgoing(
            subject=LONG_WORD[:998], headers={"X-Campaign-Id": "y" * 900, "List-Id": "é" * 900}
        ),
        "many recipients": outgoing(
            to=[(names[n % 4], f"user{n}@exämple.test") for n in range(50)],
            cc=[(names[n % 4], f"c{n}@example.test") for n in range(50)],
        ),
        "a long From name": outgoing(from_name="Ä" * 900),
        "references": outgoing(references=[f"<{'r' * 880}.{n}@example.test>" for n in range(30)]),
        "attachments": outgoing(
            attachments=[
                MailAttachment("ßpecial näme " * 19, "application/octet-stream", EVERY_BYTE),
                MailAttachment("a.txt", "text/plain", b"\n" * 5000),
                MailAttachment("empty", "text/plain", b""),
            ]
        ),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_the_bound_is_never_below_the_composed_size(case: str) -> None:
    message = _cases()[case]
    assert len(compose(message, max_bytes=HUGE)) <= size_bound(message)


def _exact_cap(message: Outgoing) -> int:
    return len(compose(message, max_bytes=HUGE))


@pytest.mark.parametrize("field, change", [("text", {}), ("attachments", {"attach": True})])
def test_a_message_one_byte_over_the_cap_is_refused_and_one_at_it_accepted(
    field: str, change: dict[str, Any]
) -> None:
    # Large enough that the bound is over the cap: check composes and decides exactly.
    message = outgoing(text="Lorem ipsum dolor. " * 3000)
    if change:
        attachment = MailAttachment("data.bin", "application/octet-stream", EVERY_BYTE * 10)
        message = dataclasses.replace(message, attachments=[attachment])
    size = _exact_cap(message)
    assert size_bound(message) > size - 1
    check(message, max_bytes=size)  # exactly at the cap: accepted
    with pytest.raises(ComposeError) as refused:
        check(message, max_bytes=size - 1)
    assert refused.value.field == field
    assert f"would be {size} bytes" in refused.value.message


def test_a_small_message_is_accepted_without_composing_it() -> None:
    message = outgoing()
    assert size_bound(message) < 64 * 1024
    check(message, max_bytes=10 * 1024 * 1024)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"to": [("Bob", "not an address")]}, "to[0]"),
        ({"cc": [("Eve\r\nBcc: x@y.test", "eve@example.test")]}, "cc[0]"),
        ({"subject": "=?utf-8?q?a=0D=0ABcc:_x@y.test?="}, "subject"),
        ({"headers": {"X-Campaign-Id": "a\nb"}}, "headers.X-Campaign-Id"),
        ({"headers": {"Bcc": "x@y.test"}}, "headers.Bcc"),
        ({"references": ["no brackets"]}, "references[0]"),
        (
            {"attachments": [MailAttachment(" ", "text/plain", b"x")]},
            "attachments[0].filename",
        ),
        (
            {"attachments": [MailAttachment("a", "multipart/mixed", b"x")]},
            "attachments[0].contentType",
        ),
    ],
)
def test_check_refuses_what_compose_refuses_naming_the_same_field(
    change: dict[str, Any], field: str
) -> None:
    message = outgoing(**change)
    with pytest.raises(ComposeError) as composed:
        compose(message, max_bytes=HUGE)
    with pytest.raises(ComposeError) as checked:
        check(message, max_bytes=HUGE)
    assert checked.value.field == composed.value.field == field
    assert checked.value.message == composed.value.message
