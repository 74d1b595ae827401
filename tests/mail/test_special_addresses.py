"""The address guard against the IANA special-purpose address registries (issue 11 point 6).

Every block that the registries do not mark globally reachable is walked: its first, middle
and last address must be refused, as written and in each IPv6 form that carries an IPv4
address (mapped, translated, NAT64, 6to4). Only IP literals are resolved: no DNS query and no
connection leaves the machine.

Registries as of 2025: https://www.iana.org/assignments/iana-ipv4-special-registry and
https://www.iana.org/assignments/iana-ipv6-special-registry, plus multicast and the blocks the
guard refuses beyond them. Blocks the registries mark globally reachable (192.0.0.9/32 PCP
anycast, 192.0.0.10/32 TURN anycast, 192.31.196.0/24 and 192.175.48.0/24 AS112, 192.52.193.0/24
AMT, 64:ff9b::/96 NAT64 of a public address, 2620:4f:8000::/48 AS112) are not listed.
"""

from __future__ import annotations

import ipaddress

import pytest

from mail.network import (
    NOT_ALLOWED_MESSAGE,
    NetworkPolicy,
    TargetError,
    blocked_reason,
    resolve_target,
)
from mail.probes import ProbeCode

IPV4_SPECIAL = [
    ("0.0.0.0/8", "RFC 791: this network"),
    ("0.0.0.0/32", "RFC 1122: this host on this network"),
    ("10.0.0.0/8", "RFC 1918: private use"),
    ("100.64.0.0/10", "RFC 6598: shared address space (carrier-grade NAT)"),
    ("127.0.0.0/8", "RFC 1122: loopback"),
    ("169.254.0.0/16", "RFC 3927: link local (cloud metadata at 169.254.169.254)"),
    ("172.16.0.0/12", "RFC 1918: private use"),
    ("192.0.0.0/24", "RFC 6890: IETF protocol assignments"),
    ("192.0.0.0/29", "RFC 7335: IPv4 service continuity prefix (DS-Lite)"),
    ("192.0.0.8/32", "RFC 7600: IPv4 dummy address"),
    ("192.0.0.170/32", "RFC 8880: NAT64/DNS64 discovery"),
    ("192.0.0.171/32", "RFC 8880: NAT64/DNS64 discovery"),
    ("192.0.2.0/24", "RFC 5737: documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "RFC 7526: deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "RFC 1918: private use"),
    ("198.18.0.0/15", "RFC 2544: benchmarking"),
    ("198.51.100.0/24", "RFC 5737: documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "RFC 5737: documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "RFC 5771: multicast"),
    ("240.0.0.0/4", "RFC 1112: reserved"),
    ("255.255.255.255/32", "RFC 919: limited broadcast"),
]

IPV6_SPECIAL = [
    ("::/128", "RFC 4291: unspecified address"),
    ("::1/128", "RFC 4291: loopback address"),
    ("::/96", "RFC 4291: deprecated IPv4-compatible addresses"),
    ("::ffff:0:0/96", "RFC 4291: IPv4-mapped addresses (of private IPv4 addresses: see below)"),
    ("::ffff:0:0:0/96", "RFC 2765: IPv4-translated addresses (SIIT), never routed"),
    ("64:ff9b:1::/48", "RFC 8215: local-use IPv4/IPv6 translation"),
    ("100::/64", "RFC 6666: discard-only address block"),
    ("100:0:0:1::/64", "RFC 9780: dummy IPv6 prefix"),
    ("2001::/23", "RFC 2928: IETF protocol assignments"),
    ("2001::/32", "RFC 4380: Teredo"),
    ("2001:2::/48", "RFC 5180: benchmarking"),
    ("2001:10::/28", "RFC 4843: deprecated ORCHID"),
    ("2001:db8::/32", "RFC 3849: documentation"),
    ("3fff::/20", "RFC 9637: documentation"),
    ("5f00::/16", "RFC 9602: segment routing (SRv6) SIDs"),
    ("fc00::/7", "RFC 4193: unique local (metadata at fd00:ec2::254)"),
    ("fe80::/10", "RFC 4291: link-local unicast"),
    ("fec0::/10", "RFC 3879: deprecated site-local"),
    ("ff00::/8", "RFC 4291: multicast"),
]

# Forms that carry an IPv4 address the packets go to; each must be judged by that address.
EMBEDDINGS = {
    "mapped": lambda v4: f"::ffff:{v4}",
    "translated": lambda v4: f"::ffff:0:{v4}",
    "NAT64": lambda v4: f"64:ff9b::{v4}",
    "6to4": lambda v4: str(ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)),
}

PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "193.0.14.129"]
PUBLIC_V6 = ["2606:4700:4700::1111", "2a00:1450:4001:82b::200e", "2001:4860:4860::8888"]


def samples(block: str) -> list[str]:
    network = ipaddress.ip_network(block)
    first, last = int(network.network_address), int(network.broadcast_address)
    return sorted({str(ipaddress.ip_address(n)) for n in (first, (first + last) // 2, last)})


def walk(registry: list[tuple[str, str]]) -> list[pytest.param]:  # type: ignore[valid-type]
    return [
        pytest.param(address, id=f"{address} ({block}, {source.split(':')[0]})")
        for block, source in registry
        for address in samples(block)
    ]


def embedded_walk() -> list[pytest.param]:  # type: ignore[valid-type]
    return [
        pytest.param(form(ipaddress.IPv4Address(address)), id=f"{name} of {address}")
        for block, _ in IPV4_SPECIAL
        for address in samples(block)
        for name, form in EMBEDDINGS.items()
    ]


async def assert_refused(address: str) -> None:
    assert blocked_reason(address) is not None, address
    with pytest.raises(TargetError) as caught:
        await resolve_target(address, 587, NetworkPolicy())
    assert caught.value.code is ProbeCode.HOST_NOT_ALLOWED
    assert caught.value.message == NOT_ALLOWED_MESSAGE


@pytest.mark.parametrize("address", walk(IPV4_SPECIAL) + walk(IPV6_SPECIAL))
async def test_every_special_purpose_address_is_refused(address: str) -> None:
    await assert_refused(address)


@pytest.mark.parametrize("address", embedded_walk())
async def test_special_ipv4_addresses_are_refused_inside_ipv6(address: str) -> None:
    await assert_refused(address)


async def test_the_reported_translated_loopback_is_refused() -> None:
    for address in ("::ffff:0:7f00:1", "::ffff:0:127.0.0.1", "::ffff:0:808:808"):
        await assert_refused(address)
    with pytest.raises(TargetError):  # as pasted from a URL
        await resolve_target("[::ffff:0:7f00:1]", 587, NetworkPolicy())


@pytest.mark.parametrize(
    "address",
    PUBLIC_V4
    + PUBLIC_V6
    + [
        form(ipaddress.IPv4Address(v4))
        for v4 in PUBLIC_V4
        for name, form in EMBEDDINGS.items()
        if name != "translated"  # SIIT addresses are never routed
    ],
)
async def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(address) is None
    target = await resolve_target(address, 587, NetworkPolicy())
    assert target.ip == address


@pytest.mark.parametrize("address", walk(IPV4_SPECIAL) + walk(IPV6_SPECIAL) + embedded_walk())
async def test_allow_private_hosts_lets_every_address_through(address: str) -> None:
    # INBOXD_ALLOW_PRIVATE_HOSTS=true is for on-premises setups: the guard steps aside.
    target = await resolve_target(address, 587, NetworkPolicy(allow_private_hosts=True))
    assert target.ip == address
