"""The write-ahead mark inside DATA (mail.smtp_data): the server has the whole message but its
last line when the mark is taken, so a sender that dies or fails before its mark has sent
nothing, and a mark refused abandons the message unfinished, never delivered."""

from __future__ import annotations

from mail.probes import ProbeSettings, Security
from mail.send import send_message
from tests.mail.conftest import USER, EndpointFactory
from tests.mail.test_send import BOB, DATA, scripted_smtp
from tests.support.mailservers import LineServer, SmtpServer
from tests.support.waiting import wait_until

OTHER = DATA.replace(b"<send.1@", b"<send.2@")


def data_lines(received: list[bytes]) -> list[bytes]:
    """What the client sent between DATA and now (the message, as it went on the wire)."""
    start = next(i for i, line in enumerate(received) if line.upper().startswith(b"DATA"))
    return received[start + 1 :]


async def test_the_mark_is_taken_with_the_message_sent_but_its_last_line(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    seen_at_mark: list[bytes] = []
    with LineServer(b"220 localhost ESMTP\r\n", scripted_smtp(lambda _: [b"250 OK\r\n"])) as server:

        async def mark() -> bool:
            # The message's lines reach the server before the mark is asked for.
            await wait_until(
                lambda: b"".join(data_lines(server.received)) == DATA, "the message at the server"
            )
            seen_at_mark.extend(data_lines(server.received))
            return True

        outcome = await send_message(
            endpoint(server.port, Security.NONE),
            probe_settings,
            envelope_from=USER,
            recipients=[BOB],
            data=DATA,
            before_data=mark,
        )
        assert outcome.accepted, outcome
        after = data_lines(server.received)
    assert b"".join(seen_at_mark) == DATA  # all of it, and not the "." that ends it
    assert after[: len(seen_at_mark) + 1] == [*seen_at_mark, b".\r\n"]


async def test_a_refused_mark_abandons_the_message_unfinished(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    async def no() -> bool:
        return False

    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    withheld = await send_message(
        inbox, probe_settings, envelope_from=USER, recipients=[BOB], data=DATA, before_data=no
    )
    assert (withheld.accepted, withheld.withheld, withheld.unknown) == (False, True, False)
    # The server is not merely slow: a message sent after it arrives, and only that one.
    sent = await send_message(
        inbox, probe_settings, envelope_from=USER, recipients=[BOB], data=OTHER
    )
    assert sent.accepted
    assert [m.data for m in smtp_starttls.messages] == [OTHER]
