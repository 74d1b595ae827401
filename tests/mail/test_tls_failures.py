"""How a failed TLS handshake is explained: which setting to look at, and the server's own reason
when it gave one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import pytest

from mail.imap_client import connect_tls
from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeSettings, Security, probe_imap, probe_smtp
from tests.mail.conftest import EndpointFactory
from tests.support.mailservers import Behaviour, HostileServer, StreamServer, closed_port
from tests.support.waiting import loop_turn, with_deadline

PROBES = [pytest.param(probe_smtp, id="smtp"), pytest.param(probe_imap, id="imap")]
# A fatal TLS alert, protocol_version (70): what a server that speaks only TLS 1.0 answers a
# client that offers 1.2 and up.
PROTOCOL_VERSION_ALERT = b"\x15\x03\x01\x00\x02\x02\x46"


class RefusesTheHandshake(StreamServer):
    """Reads the ClientHello and answers it with a fatal alert."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(1), 5)
        writer.write(PROTOCOL_VERSION_ALERT)
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(), 5)


@pytest.fixture
def quick() -> ProbeSettings:
    return ProbeSettings(
        connect_timeout=0.5, overall_timeout=1.5, network=NetworkPolicy(allow_private_hosts=True)
    )


@pytest.mark.parametrize("probe", PROBES)
async def test_a_refused_handshake_names_the_servers_reason(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    side = "smtp" if probe is probe_smtp else "imap"
    with RefusesTheHandshake() as server:
        result = await with_deadline(
            probe(endpoint(server.port, Security.TLS), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.TLS_HANDSHAKE_FAILED, result.message
    # The alert's short name, not OpenSSL's whole line.
    assert result.message.endswith(" (TLSV1_ALERT_PROTOCOL_VERSION)."), result.message
    assert "_ssl.c" not in result.message
    assert result.field == f"{side}.security"
    assert result.hint is not None and "TLS 1.2" in result.hint
    assert not result.transient


@pytest.mark.parametrize("probe", PROBES)
async def test_a_handshake_that_never_finishes_points_at_the_port(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    side = "smtp" if probe is probe_smtp else "imap"
    with HostileServer(Behaviour.SILENT) as server:
        result = await with_deadline(
            probe(endpoint(server.port, Security.TLS), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.TIMEOUT
    assert "TLS handshake" in result.message
    assert result.field == f"{side}.port"
    assert result.hint is not None and "did not complete TLS" in result.hint
    assert result.transient


@pytest.mark.parametrize("probe", PROBES)
async def test_a_server_hanging_up_mid_handshake_has_no_reason_to_quote(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.CLOSE_MID_TLS) as server:
        result = await with_deadline(
            probe(endpoint(server.port, Security.TLS), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.TLS_HANDSHAKE_FAILED
    assert result.message == "The TLS handshake with the server failed."
    assert result.hint is not None and "security setting and port" in result.hint


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_a_plaintext_port_that_never_greets_points_at_the_port(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    # Before saying so, the probe checks whether the port wanted TLS from the first byte; a
    # silent server does not, so the advice is about the port, not the security setting.
    side = "smtp" if probe is probe_smtp else "imap"
    with HostileServer(Behaviour.SILENT) as server:
        result = await with_deadline(
            probe(endpoint(server.port, security), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.TIMEOUT
    assert "sent no greeting" in result.message
    assert result.field == f"{side}.port"
    assert result.hint is not None and "port and security" in result.hint


class HangsUpAtOnce(StreamServer):
    """Accepts the connection and closes it without a word."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return


@pytest.mark.parametrize("probe", PROBES)
async def test_plain_text_where_tls_was_expected_names_the_port(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.GARBAGE) as server:
        result = await with_deadline(
            probe(endpoint(server.port, Security.TLS), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert result.message == f"The server on port {server.port} did not answer with TLS."


@pytest.mark.parametrize("probe", PROBES)
async def test_a_server_that_hangs_up_at_once_is_a_protocol_error(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HangsUpAtOnce() as server:
        result = await with_deadline(
            probe(endpoint(server.port, Security.STARTTLS), quick),  # type: ignore[operator]
            "the probe ended",
            timeout=30,
        )
    assert result.code is ProbeCode.PROTOCOL_ERROR, result.message
    assert "closed the connection" in result.message


@pytest.mark.parametrize("probe", PROBES)
async def test_a_short_password_leaves_our_own_wording_alone(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    # Server texts lose even a short password; our hints must not lose every "port" in them.
    result = await with_deadline(
        probe(endpoint(closed_port(), Security.STARTTLS, password="port"), quick),  # type: ignore[operator]
        "the probe ended",
        timeout=30,
    )
    assert result.code is ProbeCode.CONNECTION_REFUSED
    assert result.hint is not None and "port number" in result.hint


async def test_a_handshake_given_up_leaves_nothing_for_the_loop_to_report() -> None:
    # The caller's timeout cancels the handshake and aborts the connection; the layer's
    # connection_lost then must not ask a cancelled handshake for its exception (which
    # raises, and the loop logged "Exception in callback" for every such timeout).
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        with HostileServer(Behaviour.SILENT) as server:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setblocking(False)
            context = ssl.create_default_context()
            with pytest.raises(TimeoutError):
                await connect_tls(sock, asyncio.Protocol(), context, "localhost", 0.2)
            for _ in range(5):  # connection_lost comes a loop iteration or two later
                await loop_turn()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
