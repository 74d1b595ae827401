"""The outbound address guard: which addresses are public, and what resolve_target returns.

Lookups here only use IP literals, "localhost" (from /etc/hosts) and names the resolver
rejects before asking anyone, so no DNS query leaves the machine.
"""

from __future__ import annotations

import pytest

from mail.network import (
    NOT_ALLOWED_MESSAGE,
    NetworkPolicy,
    TargetError,
    blocked_reason,
    is_public_address,
    resolve_target,
)
from mail.probes import ProbeCode

BLOCKED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.8",
    "::",
    "::1",
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",  # IPv4-mapped private
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001::1",  # Teredo
    "::10.0.0.1",  # deprecated IPv4-compatible
    "100::1",
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "142.250.1.108",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.32.0.1",  # just outside 172.16/12
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses(address: str) -> None:
    assert blocked_reason(address) is not None
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert blocked_reason(address) is None


def test_reasons_name_the_range() -> None:
    assert blocked_reason("169.254.169.254") == "metadata"
    assert blocked_reason("127.0.0.1") == "loopback"
    assert blocked_reason("::ffff:10.0.0.1") == "embedded private"
    assert blocked_reason("100.64.0.1") == "shared"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "10.1.2.3"])
async def test_private_hosts_refused_with_one_generic_message(host: str) -> None:
    with pytest.raises(TargetError) as caught:
        await resolve_target(host, 587, NetworkPolicy())
    assert caught.value.code is ProbeCode.HOST_NOT_ALLOWED
    assert caught.value.message == NOT_ALLOWED_MESSAGE
    assert caught.value.field == "host"


async def test_private_hosts_allowed_when_policy_says_so() -> None:
    target = await resolve_target("localhost", 587, NetworkPolicy(allow_private_hosts=True))
    assert target.ip == "127.0.0.1"
    assert target.host == "localhost"  # kept for SNI and certificate checks
    assert target.port == 587


async def test_ip_literal_resolves_to_itself() -> None:
    target = await resolve_target("127.0.0.1", 25, NetworkPolicy(allow_private_hosts=True))
    assert (target.ip, target.host) == ("127.0.0.1", "127.0.0.1")


async def test_public_ip_literal_allowed_without_connecting() -> None:
    target = await resolve_target("8.8.8.8", 465, NetworkPolicy())
    assert target.ip == "8.8.8.8"


async def test_port_allow_list() -> None:
    policy = NetworkPolicy(allow_private_hosts=True, allowed_ports=frozenset({465, 587}))
    assert (await resolve_target("127.0.0.1", 587, policy)).port == 587
    with pytest.raises(TargetError) as caught:
        await resolve_target("127.0.0.1", 2525, policy)
    assert caught.value.code is ProbeCode.HOST_NOT_ALLOWED
    assert caught.value.field == "port"
    assert "465, 587" in caught.value.message


@pytest.mark.parametrize("port", [0, -1, 65536])
async def test_invalid_ports(port: int) -> None:
    with pytest.raises(TargetError) as caught:
        await resolve_target("127.0.0.1", port, NetworkPolicy(allow_private_hosts=True))
    assert caught.value.field == "port"


# Names rejected locally (empty IDNA label, over-long label, whitespace): no query is sent.
@pytest.mark.parametrize("host", ["a..example", "x" * 64 + ".example", "bad host", "", "   "])
async def test_unresolvable_host(host: str) -> None:
    with pytest.raises(TargetError) as caught:
        await resolve_target(host, 587, NetworkPolicy())
    assert caught.value.code is ProbeCode.HOST_NOT_FOUND
