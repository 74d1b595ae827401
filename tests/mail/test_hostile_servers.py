"""Servers that misbehave: the probe must end within its timeout, with a useful code."""

from __future__ import annotations

import time

import pytest

from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeSettings, Security, probe_imap, probe_smtp
from tests.mail.conftest import EndpointFactory
from tests.support.mailservers import Behaviour, HostileServer

CONNECT = 0.5
OVERALL = 1.5
SLACK = 1.0  # scheduling on a busy two-core CI machine

PROBES = [pytest.param(probe_smtp, id="smtp"), pytest.param(probe_imap, id="imap")]


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
        started = time.monotonic()
        result = await probe(endpoint(server.port, security), quick)  # type: ignore[operator]
        elapsed = time.monotonic() - started
    assert result.code is ProbeCode.TIMEOUT, result.message
    assert result.transient
    assert elapsed < OVERALL + SLACK


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_garbage_is_a_protocol_error(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.GARBAGE) as server:
        started = time.monotonic()
        result = await probe(endpoint(server.port, security), quick)  # type: ignore[operator]
        elapsed = time.monotonic() - started
    assert result.code is ProbeCode.PROTOCOL_ERROR, result.message
    assert elapsed < OVERALL + SLACK


@pytest.mark.parametrize("probe", PROBES)
async def test_garbage_under_implicit_tls(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.GARBAGE) as server:
        result = await probe(endpoint(server.port, Security.TLS), quick)  # type: ignore[operator]
    assert result.code in (ProbeCode.PROTOCOL_ERROR, ProbeCode.TLS_HANDSHAKE_FAILED)


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
async def test_endless_line_is_bounded(
    probe: object, security: Security, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.ENDLESS_LINE) as server:
        started = time.monotonic()
        result = await probe(endpoint(server.port, security), quick)  # type: ignore[operator]
        elapsed = time.monotonic() - started
        sent = server.bytes_sent
    assert result.code in (ProbeCode.PROTOCOL_ERROR, ProbeCode.TIMEOUT), result.message
    assert elapsed < OVERALL + SLACK
    # The client stopped reading long before the server's 64 MiB cap.
    assert sent < 16 * 1024 * 1024


@pytest.mark.parametrize("probe", PROBES)
async def test_close_during_tls_handshake(
    probe: object, endpoint: EndpointFactory, quick: ProbeSettings
) -> None:
    with HostileServer(Behaviour.CLOSE_MID_TLS) as server:
        result = await probe(endpoint(server.port, Security.TLS), quick)  # type: ignore[operator]
    assert result.code is ProbeCode.TLS_HANDSHAKE_FAILED, result.message
    assert result.field is not None and result.field.endswith(".security")
