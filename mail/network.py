"""Outbound address guard: inboxd connects to user-supplied hosts, so a host must not let a
user reach the machine's own network (loopback, private ranges, cloud metadata).

The guard resolves once and hands back the checked IP; callers connect to that IP and keep
the hostname only for TLS (SNI and certificate checks). A second lookup at connect time
would let DNS rebinding swap in a private address after the check.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from mail.results import ProbeCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NOT_ALLOWED_MESSAGE = "This host is not allowed: inboxd only connects to public mail servers."

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Explicit ranges on top of `is_global`: the stdlib's tables differ between Python patch
# releases (3.11.7 calls 64:ff9b::/96 global), and this list must not move under us.
_BLOCKED_V4: tuple[ipaddress.IPv4Network, ...] = tuple(
    _V4(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT, RFC 6598
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, includes the 169.254.169.254 metadata service
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
    )
)
_BLOCKED_V6: tuple[ipaddress.IPv6Network, ...] = tuple(
    _V6(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::/96",  # deprecated IPv4-compatible addresses
        # IPv4-translated (SIIT, RFC 2765): never routed, whatever IPv4 address it embeds;
        # unlike ::ffff:0:0/96 the stdlib sees no IPv4 address in it (issue 11 point 6).
        "::ffff:0:0:0/96",
        "64:ff9b:1::/48",  # local-use NAT64, RFC 8215
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy IPv6 prefix, RFC 9780
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation, RFC 9637
        "5f00::/16",  # segment routing (SRv6) SIDs, RFC 9602
        "fc00::/7",  # unique local addresses, includes fd00:ec2::254 (metadata)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
# Prefixes whose low bits carry an IPv4 address the packets really go to.
_NAT64 = _V6("64:ff9b::/96")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Where probes and mail clients may connect.

    `allow_private_hosts` is for self-hosted setups and tests; `allowed_ports`, when set,
    restricts outbound ports (e.g. to the mail ports); `dns_timeout` bounds the lookup.
    """

    allow_private_hosts: bool = False
    allowed_ports: frozenset[int] | None = None
    dns_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A checked destination. `ip` is the address to connect to; `host` is kept for TLS."""

    host: str
    port: int
    ip: str
    family: int
    # Further allowed addresses of the same host, tried in order if `ip` cannot be reached.
    alternatives: tuple[tuple[str, int], ...] = ()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return ((self.ip, self.family), *self.alternatives)


class TargetError(Exception):
    """The destination was refused or could not be resolved; `message` is safe to show."""

    def __init__(self, code: ProbeCode, message: str, *, field: str = "host") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # "host" or "port": which input the user should change.
        self.field = field


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address forwards to, if it is one of the embedding forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why an address is not a public destination, or None when it is public.

    The reason is for logs and tests; users only ever see NOT_ALLOWED_MESSAGE, so the guard
    does not tell a prober which internal ranges exist.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"embedded {inner}" if inner else None
        if any(ip in net for net in _BLOCKED_V6):
            return _describe(ip)
    elif any(ip in net for net in _BLOCKED_V4):
        return _describe(ip)
    if not ip.is_global or ip.is_multicast:
        return _describe(ip)
    return None


def _describe(ip: IPAddress) -> str:
    if ip in _METADATA:
        return "metadata"
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name
    if isinstance(ip, ipaddress.IPv4Address) and ip in _V4("100.64.0.0/10"):
        return "shared"
    return "special"


def is_public_address(address: str | IPAddress) -> bool:
    return blocked_reason(address) is None


def check_port(port: int, policy: NetworkPolicy) -> None:
    if not 1 <= port <= 65535:
        raise TargetError(
            ProbeCode.HOST_NOT_ALLOWED, f"Port {port} is not a valid port.", field="port"
        )
    if policy.allowed_ports is not None and port not in policy.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise TargetError(
            ProbeCode.HOST_NOT_ALLOWED,
            f"Port {port} is not allowed: inboxd only connects to ports {allowed}.",
            field="port",
        )


def _normalise_host(host: str) -> str:
    host = host.strip()
    # "[::1]" is how users paste IPv6 literals from URLs.
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # One trailing dot (a fully qualified name) would break certificate name matching.
    return host[:-1] if host.endswith(".") else host


def _literal(name: str, port: int) -> list[Any]:
    """getaddrinfo's answer for an IP address written plainly, without the resolver's thread
    pool; empty for names (and unusual spellings, which getaddrinfo interprets)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return []
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (name, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (name, port))]


async def resolve_target(host: str, port: int, policy: NetworkPolicy) -> ResolvedTarget:
    """Resolve `host`, refuse non-public addresses unless the policy allows them.

    Raises TargetError with HOST_NOT_ALLOWED (generic message), HOST_NOT_FOUND or TIMEOUT.
    """
    check_port(port, policy)
    name = _normalise_host(host)
    if not name or any(c.isspace() or ord(c) < 32 for c in name):
        raise TargetError(ProbeCode.HOST_NOT_FOUND, "The host name is empty or malformed.")
    loop = asyncio.get_running_loop()
    try:
        infos = _literal(name, port) or await asyncio.wait_for(
            loop.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
            policy.dns_timeout,
        )
    except TimeoutError:
        raise TargetError(
            ProbeCode.TIMEOUT, f"Looking up {name} took longer than {policy.dns_timeout:g} s."
        ) from None
    except (socket.gaierror, UnicodeError, OSError):
        raise TargetError(
            ProbeCode.HOST_NOT_FOUND, f"The host {name} could not be found."
        ) from None

    allowed: list[tuple[str, socket.AddressFamily]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if policy.allow_private_hosts or blocked_reason(ip) is None:
            entry = (address, family)
            if entry not in allowed:
                allowed.append(entry)
    if not allowed:
        if not infos:
            raise TargetError(ProbeCode.HOST_NOT_FOUND, f"The host {name} could not be found.")
        raise TargetError(ProbeCode.HOST_NOT_ALLOWED, NOT_ALLOWED_MESSAGE)
    (first_ip, first_family), *rest = allowed
    return ResolvedTarget(
        host=name, port=port, ip=first_ip, family=first_family, alternatives=tuple(rest)
    )


# Errors that mean "this address is unusable from here", where trying the host's next
# address makes sense; a timeout is not among them (it would double the wait).
_TRY_NEXT = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
        errno.EAFNOSUPPORT,
    }
)


async def open_socket(target: ResolvedTarget, within: float) -> socket.socket:
    """A connected non-blocking TCP socket to the checked address, within `within` seconds.

    Raises TimeoutError or the last OSError (ConnectionRefusedError for a closed port).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: OSError | None = None
    for ip, family in target.addresses:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (ip, target.port)), remaining)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError) or exc.errno not in _TRY_NEXT:
                raise
            last_error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert last_error is not None
    raise last_error
