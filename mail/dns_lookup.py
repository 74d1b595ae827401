"""DNS plumbing shared by the domain checks and settings discovery.

`DnsClient` wraps dnspython's async resolver and turns every outcome into a `Lookup` value:
an answer, NXDOMAIN, no answer (NODATA), or an error carrying the resolver's own message.
It never raises for DNS trouble, and every query is bounded by `DnsSettings.lifetime`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DKIM_SELECTORS: tuple[str, ...] = (
    "default",
    "google",
    "selector1",
    "selector2",
    "k1",
    "mail",
    "dkim",
    "s1",
    "s2",
)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def system_nameservers() -> list[str]:
    """The system resolver's nameservers (/etc/resolv.conf or platform equivalent), or []."""
    try:
        resolver = dns.resolver.Resolver(configure=True)
    except (dns.exception.DNSException, OSError):
        return []
    return [str(ns) for ns in resolver.nameservers if dns.inet.is_address(str(ns))]


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where and how patiently to ask DNS.

    timeout bounds one attempt against one nameserver; lifetime bounds a whole lookup
    (all attempts and retries). Both are seconds.
    """

    nameservers: list[str] = field(default_factory=system_nameservers)
    port: int = 53
    timeout: float = 3.0
    lifetime: float = 5.0
    default_dkim_selectors: tuple[str, ...] = DEFAULT_DKIM_SELECTORS

    def __post_init__(self) -> None:
        for ns in self.nameservers:
            if not dns.inet.is_address(ns):
                raise ValueError(f"nameserver {ns!r} is not an IP address")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, not {self.port}")
        if self.timeout <= 0 or self.lifetime <= 0:
            raise ValueError("timeout and lifetime must be positive")


def normalize_domain(text: str) -> str:
    """Lower-case ASCII (IDNA) form of a domain name, without the final dot.

    Raises ValueError, with a message fit for a user, when it is not a plausible mail domain:
    at least two labels of letters, digits and hyphens, and a non-numeric last label.
    """
    raw = text.strip().rstrip(".")
    if not raw:
        raise ValueError("the domain is empty")
    if any(c.isspace() for c in raw):
        raise ValueError(f"{raw!r} is not a valid domain: it contains whitespace")
    try:
        ascii_name = dns.name.from_unicode(raw).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"{raw!r} is not a valid domain: {exc}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError(f"{raw!r} is not a valid domain: it needs a dot, like example.com")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{raw!r} is not a valid domain: use only letters, digits, hyphens and dots"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{raw!r} is not a valid domain: it looks like an IP address")
    return ascii_name


class LookupStatus(StrEnum):
    OK = "OK"
    NXDOMAIN = "NXDOMAIN"
    NOANSWER = "NOANSWER"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of one query. `error` is the resolver's message when status is ERROR."""

    name: str
    rdtype: str
    status: LookupStatus
    rdatas: tuple[dns.rdata.Rdata, ...] = ()
    error: str = ""
    canonical_name: str = ""  # the name the answer is for, after any CNAMEs

    @property
    def found(self) -> bool:
        return self.status is LookupStatus.OK

    @property
    def missing(self) -> bool:
        return self.status in (LookupStatus.NXDOMAIN, LookupStatus.NOANSWER)

    @property
    def failed(self) -> bool:
        return self.status is LookupStatus.ERROR

    def texts(self) -> list[str]:
        """TXT answers, each record's strings joined (as SPF, DKIM and DMARC require)."""
        out: list[str] = []
        for rdata in self.rdatas:
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                out.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return out

    def describe_failure(self) -> str:
        """'DNS lookup of TXT x failed: <resolver message>' for ERROR lookups."""
        return f"DNS lookup of {self.rdtype} {self.name} failed: {self.error}"


@dataclass(frozen=True, slots=True)
class AddressLookup:
    host: str
    addresses: tuple[IPAddress, ...]
    errors: tuple[str, ...]  # resolver messages for A/AAAA lookups that failed
    canonical_name: str

    @property
    def found(self) -> bool:
        return bool(self.addresses)

    @property
    def missing(self) -> bool:
        return not self.addresses and not self.errors


class DnsClient:
    """Async DNS queries with per-instance caching; never raises for DNS trouble."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.port = settings.port
        resolver.nameservers = list(settings.nameservers)
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.lifetime
        resolver.use_edns(0, 0, 1232)
        self._resolver = resolver
        self._cache: dict[tuple[str, str], Lookup] = {}

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        key = (name.lower().rstrip("."), rdtype.upper())
        cached = self._cache.get(key)
        if cached is None:
            cached = await self._query(*key)
            self._cache[key] = cached
        return cached

    async def _query(self, name: str, rdtype: str) -> Lookup:
        if not self.settings.nameservers:
            return Lookup(name, rdtype, LookupStatus.ERROR, error="no DNS nameservers configured")
        try:
            qname = dns.name.from_text(name + ".")
        except dns.exception.DNSException as exc:
            return Lookup(name, rdtype, LookupStatus.ERROR, error=f"invalid DNS name: {exc}")
        try:
            # dnspython enforces `lifetime`; the outer bound only guards against a stuck loop.
            async with asyncio.timeout(self.settings.lifetime + 1.0):
                answer = await self._resolver.resolve(
                    qname,
                    dns.rdatatype.from_text(rdtype),
                    search=False,
                    raise_on_no_answer=False,
                )
        except dns.resolver.NXDOMAIN:
            return Lookup(name, rdtype, LookupStatus.NXDOMAIN)
        except dns.resolver.NoAnswer:
            return Lookup(name, rdtype, LookupStatus.NOANSWER)
        except dns.exception.DNSException as exc:
            return Lookup(name, rdtype, LookupStatus.ERROR, error=str(exc) or type(exc).__name__)
        except TimeoutError:
            message = f"no answer within {self.settings.lifetime + 1.0:.1f} seconds"
            return Lookup(name, rdtype, LookupStatus.ERROR, error=message)
        except OSError as exc:
            return Lookup(name, rdtype, LookupStatus.ERROR, error=f"network error: {exc}")
        canonical = answer.canonical_name.to_text(omit_final_dot=True).lower()
        if answer.rrset is None:
            return Lookup(name, rdtype, LookupStatus.NOANSWER, canonical_name=canonical)
        return Lookup(
            name, rdtype, LookupStatus.OK, rdatas=tuple(answer.rrset), canonical_name=canonical
        )

    async def addresses(self, host: str) -> AddressLookup:
        """A and AAAA addresses of `host` (or the address itself, for an IP literal)."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return AddressLookup(host, (literal,), (), host)
        a, aaaa = await asyncio.gather(self.lookup(host, "A"), self.lookup(host, "AAAA"))
        found: list[IPAddress] = []
        errors: list[str] = []
        for lk in (a, aaaa):
            if lk.failed:
                errors.append(lk.describe_failure())
            for rdata in lk.rdatas:
                try:
                    found.append(ipaddress.ip_address(rdata.to_text()))
                except ValueError:
                    continue
        canonical = a.canonical_name or aaaa.canonical_name or host.lower().rstrip(".")
        return AddressLookup(host, tuple(found), tuple(errors), canonical)
