"""Servers that misbehave: the probe must end within its timeout, with a useful code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import pytest

from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeResult, ProbeSettings, Security, probe_imap, probe_smtp
from tests.mail.conftest import EndpointFactory
from tests.support.mailservers import Behaviour, HostileServer, LineServer, StreamServer
from tests.support.waiting import with_deadline

CONNECT = 0.5
OVERALL = 1.5

PROBES = [pytest.param(probe_smtp, id="smtp"), pytest.param(probe_imap, id="imap")]


async def ended(probe: Awaitable[ProbeResult]) -> ProbeResult:
    """The probe's result. It must end by itself, with a typed code: the outer limit (twenty
    times the probe's own) only stops a hung test, it measures nothing."""
    return await with_deadline(probe, "the probe ended at its own timeout", timeout=OVERALL * 20)


@pytest.fixture
def quick() -> ProbeSettings:
    return ProbeSettings(
        connect_timeout=CONNECT,
        overall_timeout=OVERALL,
        network=NetworkPolicy(allow_private_hosts=True),
    )


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS, Security.NONE])
async def test_silent_server_times_out(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.SILENT) as server:
        result = await ended(probe(endpoint(server.port, security), quick))  # type: ignore[operator]
    assert result.code is ProbeCode.TIMEOUT, result.message
    assert result.transient


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_garbage_is_a_protocol_error(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.GARBAGE) as server:
        result = await ended(probe(endpoint(server.port, security), quick))  # type: ignore[operator]
    assert result.code is ProbeCode.PROTOCOL_ERROR, result.message


@pytest.mark.parametrize("probe", PROBES)
async def test_garbage_under_implicit_tls(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.GARBAGE) as server:
        result = await ended(probe(endpoint(server.port, Security.TLS), quick))  # type: ignore[operator]
    assert result.code in (ProbeCode.PROTOCOL_ERROR, ProbeCode.TLS_HANDSHAKE_FAILED)


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_endless_line_is_bounded(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.ENDLESS_LINE) as server:
        result = await ended(probe(endpoint(server.port, security), quick))  # type: ignore[operator]
        sent = server.bytes_sent
    assert result.code in (ProbeCode.PROTOCOL_ERROR, ProbeCode.TIMEOUT), result.message
    # The client stopped reading long before the server's 64 MiB cap.
    assert sent < 16 * 1024 * 1024


@pytest.mark.parametrize("probe", PROBES)
async def test_close_during_tls_handshake(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.CLOSE_MID_TLS) as server:
        result = await ended(probe(endpoint(server.port, Security.TLS), quick))  # type: ignore[operator]
    assert result.code is ProbeCode.TLS_HANDSHAKE_FAILED, result.message
    assert result.field is not None and result.field.endswith(".security")


# --- Appended: the same misbehaviour one step later in the conversation --------------------
# The servers above misbehave from the first byte. These two greet properly first, so the probe
# is already past connect (and, for STARTTLS, past the plaintext exchange) when things go wrong.


class GreetThenSilent(LineServer):
    """Sends a proper greeting, then never answers anything."""

    def __init__(self, greeting: bytes) -> None:
        super().__init__(greeting, lambda line: [])


class StarttlsThenDrop(StreamServer):
    """Offers STARTTLS, says "go ahead", reads the first byte of the ClientHello and hangs up."""

    def __init__(self, protocol: str) -> None:
        super().__init__()
        self.protocol = protocol
        self.hung_up_mid_handshake = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        smtp = self.protocol == "smtp"
        writer.write(
            b"220 localhost ESMTP\r\n"
            if smtp
            else b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"
        )
        await writer.drain()
        for _ in range(20):  # bounded: a probe needs two or three commands to get here
            line = await reader.readline()
            if not line:
                return
            tag, _, rest = line.strip().partition(b" ")
            command = (line if smtp else rest).strip().split(b" ", 1)[0].upper()
            if smtp and command in (b"EHLO", b"HELO"):
                writer.write(b"250-localhost\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n")
            elif not smtp and command == b"CAPABILITY":
                writer.write(
                    b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n" + tag + b" OK\r\n"
                )
            elif command == b"STARTTLS":
                writer.write(b"220 2.0.0 Ready to start TLS\r\n" if smtp else tag + b" OK go\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), 5)  # the ClientHello begins
                self.hung_up_mid_handshake += 1
                return
            else:
                writer.write(b"502 no\r\n" if smtp else tag + b" BAD no\r\n")
            await writer.drain()


GREETINGS = {probe_smtp: b"220 localhost ESMTP ready\r\n", probe_imap: b"* OK ready\r\n"}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_greeting_then_silence_times_out(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with GreetThenSilent(GREETINGS[probe]) as server:  # type: ignore[index]
        result = await ended(probe(endpoint(server.port, security), quick))  # type: ignore[operator]
        received = list(server.received)
    assert result.code is ProbeCode.TIMEOUT, result.message
    assert result.transient
    assert received, "the probe got past the greeting before the silence"
    # The per-reply limit fired, not the whole probe's: the message names the one that did.
    assert f"no reply within {quick.connect_timeout:g} s" in result.message
    assert result.field is not None and result.field.endswith(".host")


@pytest.mark.parametrize("probe", PROBES)
async def test_close_during_starttls_handshake(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    name = "smtp" if probe is probe_smtp else "imap"
    with StarttlsThenDrop(name) as server:
        result = await ended(probe(endpoint(server.port, Security.STARTTLS), quick))  # type: ignore[operator]
        dropped = server.hung_up_mid_handshake
    assert dropped == 1, "the probe never started the TLS handshake"
    assert result.code is ProbeCode.TLS_HANDSHAKE_FAILED, (result.code, result.message)
    assert not result.ok
