"""Suggest SMTP and IMAP settings for an email address.

Sources, tried in order until each protocol has a suggestion:

1. PRESET_DOMAIN - the address's domain is a known provider's (gmail.com ...); no DNS needed.
2. PRESET_MX     - the domain's MX hosts belong to a known provider (e.g. Google Workspace).
3. SRV           - RFC 6186 / RFC 8314 records: _submissions._tcp (implicit TLS, preferred),
                   _submission._tcp (STARTTLS), _imaps._tcp (preferred), _imap._tcp.
                   A target of "." means the service is not offered.
4. CONVENTIONAL  - smtp.<domain> / imap.<domain>, then mail.<domain>, when they have an A or AAAA
                   record. Ports are the usual ones (587 STARTTLS, 993 TLS); nothing is probed.

Presets answer both protocols; SRV and conventional names are looked up per protocol, so one
protocol can come from SRV and the other from conventional names. DNS trouble never raises:
lookups that failed are listed in `Discovery.errors`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dns.rdtypes.ANY.MX
import dns.rdtypes.IN.SRV

from mail.dns_lookup import DnsClient, DnsSettings, Lookup, LookupStatus, normalize_domain
from mail.presets import (
    PRESETS,
    Provider,
    ProviderPreset,
    Security,
    ServerPreset,
    preset_for_domain,
    preset_for_mx_host,
)

__all__ = [
    "Discovery",
    "DiscoverySource",
    "DnsSettings",
    "ServerSuggestion",
    "discover_mail_settings",
    "split_email",
]


class DiscoverySource(StrEnum):
    PRESET_DOMAIN = "PRESET_DOMAIN"
    PRESET_MX = "PRESET_MX"
    SRV = "SRV"
    CONVENTIONAL = "CONVENTIONAL"


CONFIDENCE: dict[DiscoverySource, float] = {
    DiscoverySource.PRESET_DOMAIN: 0.95,
    DiscoverySource.PRESET_MX: 0.85,
    DiscoverySource.SRV: 0.8,
    DiscoverySource.CONVENTIONAL: 0.5,
}
# SRV targets outside the domain are common (hosted mail) but could be anyone's: a bit less sure.
SRV_FOREIGN_TARGET_CONFIDENCE = 0.7
# mail.<domain> is a weaker hint than smtp.<domain> / imap.<domain>.
CONVENTIONAL_GENERIC_CONFIDENCE = 0.4


@dataclass(frozen=True, slots=True)
class ServerSuggestion:
    host: str
    port: int
    security: Security
    source: DiscoverySource
    confidence: float  # 0..1

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "source": self.source.value,
            "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class Discovery:
    email: str
    domain: str  # lower-case ASCII (IDNA) form
    provider: Provider | None  # when a preset identified it
    smtp: ServerSuggestion | None
    imap: ServerSuggestion | None
    errors: tuple[str, ...] = ()  # DNS lookups that failed; the answer may be incomplete

    @property
    def found(self) -> bool:
        return self.smtp is not None or self.imap is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "domain": self.domain,
            "provider": self.provider.value if self.provider else None,
            "smtp": self.smtp.to_dict() if self.smtp else None,
            "imap": self.imap.to_dict() if self.imap else None,
            "errors": list(self.errors),
        }


def split_email(email: str) -> tuple[str, str]:
    """(local part, normalised domain); ValueError with a user-facing message if invalid."""
    text = email.strip()
    if not text:
        raise ValueError("the email address is empty")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{text!r} is not an email address: expected name@domain")
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an email address: it contains whitespace")
    if len(local) > 64:
        raise ValueError(f"{text!r} is not an email address: the part before @ is too long")
    if domain.startswith("["):
        raise ValueError(
            f"{text!r} uses an address literal; settings can only be discovered for a domain"
        )
    try:
        normalized = normalize_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an email address: {exc}") from None
    return local, normalized


def _from_preset(
    preset: ProviderPreset, source: DiscoverySource, email: str, domain: str
) -> Discovery:
    def suggestion(server: ServerPreset) -> ServerSuggestion:
        return ServerSuggestion(
            server.host, server.port, server.security, source, CONFIDENCE[source]
        )

    return Discovery(
        email, domain, preset.provider, suggestion(preset.smtp), suggestion(preset.imap)
    )


def _provider_for_target(host: str) -> Provider | None:
    for preset in PRESETS.values():
        if host in (preset.smtp.host, preset.imap.host):
            return preset.provider
    return None


# (service, security) per protocol, most preferred first (RFC 8314: implicit TLS first).
_SRV_SERVICES: dict[str, tuple[tuple[str, Security], ...]] = {
    "smtp": (("_submissions._tcp", Security.TLS), ("_submission._tcp", Security.STARTTLS)),
    "imap": (("_imaps._tcp", Security.TLS), ("_imap._tcp", Security.STARTTLS)),
}

_CONVENTIONAL_HOSTS: dict[str, tuple[tuple[str, int, Security, float], ...]] = {
    "smtp": (
        ("smtp", 587, Security.STARTTLS, CONFIDENCE[DiscoverySource.CONVENTIONAL]),
        ("mail", 587, Security.STARTTLS, CONVENTIONAL_GENERIC_CONFIDENCE),
    ),
    "imap": (
        ("imap", 993, Security.TLS, CONFIDENCE[DiscoverySource.CONVENTIONAL]),
        ("mail", 993, Security.TLS, CONVENTIONAL_GENERIC_CONFIDENCE),
    ),
}


_NOT_OFFERED = "not offered"


def _srv_target(lookup: Lookup) -> tuple[str, int] | str | None:
    """(host, port) of the best SRV record; _NOT_OFFERED for a "." target; None if absent."""
    records = [r for r in lookup.rdatas if isinstance(r, dns.rdtypes.IN.SRV.SRV)]
    offered = [r for r in records if r.target.to_text() != "." and r.port != 0]
    if not offered:
        return _NOT_OFFERED if records else None
    best = min(offered, key=lambda r: (r.priority, -r.weight, r.target.to_text()))
    return best.target.to_text(omit_final_dot=True).lower(), int(best.port)


async def _from_srv(
    client: DnsClient, domain: str, protocol: str, errors: list[str]
) -> ServerSuggestion | str | None:
    """A suggestion; _NOT_OFFERED when every service's SRV record says "."; else None."""
    services = _SRV_SERVICES[protocol]
    lookups = await asyncio.gather(
        *(client.lookup(f"{service}.{domain}", "SRV") for service, _ in services)
    )
    not_offered = 0
    for (_, security), lookup in zip(services, lookups, strict=True):
        if lookup.failed:
            errors.append(lookup.describe_failure())
            continue
        target = _srv_target(lookup)
        if target is None:
            continue
        if isinstance(target, str):
            not_offered += 1
            continue
        host, port = target
        addresses = await client.addresses(host)
        errors.extend(addresses.errors)
        if not addresses.found:
            continue
        inside = host == domain or host.endswith("." + domain)
        confidence = CONFIDENCE[DiscoverySource.SRV] if inside else SRV_FOREIGN_TARGET_CONFIDENCE
        return ServerSuggestion(host, port, security, DiscoverySource.SRV, confidence)
    return _NOT_OFFERED if not_offered == len(services) else None


async def _from_conventional(
    client: DnsClient, domain: str, protocol: str, errors: list[str]
) -> ServerSuggestion | None:
    candidates = _CONVENTIONAL_HOSTS[protocol]
    resolved = await asyncio.gather(
        *(client.addresses(f"{label}.{domain}") for label, _, _, _ in candidates)
    )
    for (label, port, security, confidence), addresses in zip(candidates, resolved, strict=True):
        errors.extend(addresses.errors)
        if addresses.found:
            return ServerSuggestion(
                f"{label}.{domain}", port, security, DiscoverySource.CONVENTIONAL, confidence
            )
    return None


async def discover_mail_settings(email: str, settings: DnsSettings) -> Discovery:
    """Suggested SMTP and IMAP settings for `email`.

    Raises ValueError (with a message fit for a field error) when `email` is not a valid
    address. Never raises for DNS trouble; an unknown domain gives smtp=None, imap=None.
    """
    _, domain = split_email(email)
    address = email.strip()
    preset = preset_for_domain(domain)
    if preset is not None:
        return _from_preset(preset, DiscoverySource.PRESET_DOMAIN, address, domain)

    client = DnsClient(settings)
    errors: list[str] = []
    mx = await client.lookup(domain, "MX")
    if mx.failed:
        errors.append(mx.describe_failure())
    if mx.status is LookupStatus.NXDOMAIN:  # no such domain, so no names under it either
        return Discovery(address, domain, None, None, None)
    exchanges = sorted(
        (r for r in mx.rdatas if isinstance(r, dns.rdtypes.ANY.MX.MX)),
        key=lambda r: r.preference,
    )
    for record in exchanges:
        preset = preset_for_mx_host(record.exchange.to_text(omit_final_dot=True))
        if preset is not None:
            return _from_preset(preset, DiscoverySource.PRESET_MX, address, domain)

    srv_smtp, srv_imap = await asyncio.gather(
        _from_srv(client, domain, "smtp", errors), _from_srv(client, domain, "imap", errors)
    )
    # Conventional names only where SRV neither answered nor said "not offered".
    conventional_smtp, conventional_imap = await asyncio.gather(
        _from_conventional(client, domain, "smtp", errors) if srv_smtp is None else _none(),
        _from_conventional(client, domain, "imap", errors) if srv_imap is None else _none(),
    )
    smtp = srv_smtp if isinstance(srv_smtp, ServerSuggestion) else conventional_smtp
    imap = srv_imap if isinstance(srv_imap, ServerSuggestion) else conventional_imap
    provider = next(
        (
            p
            for p in (_provider_for_target(s.host) for s in (smtp, imap) if s is not None)
            if p is not None
        ),
        None,
    )
    return Discovery(address, domain, provider, smtp, imap, tuple(dict.fromkeys(errors)))


async def _none() -> None:
    return None
