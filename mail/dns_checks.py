"""Check a sending domain's DNS: MX, SPF, DKIM and DMARC.

`check_domain_setup` never raises for DNS trouble. Each record gets a `RecordCheck` whose state
is one of:

* PASS    - fine as it is (the message may still carry advice);
* WARN    - works, but should be improved; the message says how;
* FAIL    - broken or harmful; the message says what to add or change;
* MISSING - not published (NXDOMAIN or no record of that type); the message gives an example;
* ERROR   - DNS did not answer (timeout, SERVFAIL, refused); the message carries the resolver's
  message. A lookup that fails is never reported as MISSING.

Each record family has its module (dns_check_mx, dns_check_spf, dns_check_dkim,
dns_check_dmarc) whose docstring gives the decisions worth knowing; the result types are in
dns_results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from mail.dns_check_dkim import check_dkim
from mail.dns_check_dmarc import check_dmarc
from mail.dns_check_mx import check_mx, is_ip_literal
from mail.dns_check_spf import check_spf
from mail.dns_lookup import DnsClient, DnsSettings, normalize_domain
from mail.dns_results import CheckState, DomainSetupStatus, RecordCheck

__all__ = [
    "CheckState",
    "DnsSettings",
    "DomainSetupStatus",
    "RecordCheck",
    "check_domain_setup",
]


def _normalize_selectors(selectors: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in selectors:
        selector = raw.strip().strip(".").lower()
        labels = selector.split(".")
        if not selector or not all(
            label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
            for label in labels
        ):
            raise ValueError(f"{raw!r} is not a valid DKIM selector")
        if selector not in out:
            out.append(selector)
    return out


async def check_domain_setup(
    domain: str,
    *,
    smtp_host: str | None,
    dkim_selectors: Sequence[str],
    settings: DnsSettings,
) -> DomainSetupStatus:
    """Check MX, SPF, DKIM and DMARC of `domain` via DNS.

    smtp_host: the server mail is sent through; SPF is checked to authorise its addresses.
    dkim_selectors: selectors to look up; empty means `settings.default_dkim_selectors`.
    Raises ValueError for an invalid domain, SMTP host or selector; never for DNS trouble.
    """
    name = normalize_domain(domain)
    host: str | None = None
    if smtp_host is not None and smtp_host.strip():
        stripped = smtp_host.strip().rstrip(".").lower()
        try:
            host = stripped if is_ip_literal(stripped) else normalize_domain(stripped)
        except ValueError as exc:
            raise ValueError(f"invalid SMTP host: {exc}") from None
    if isinstance(dkim_selectors, str):  # a lone selector, not a sequence of characters
        dkim_selectors = [dkim_selectors]
    selectors = _normalize_selectors(dkim_selectors or settings.default_dkim_selectors)
    client = DnsClient(settings)
    mx, spf, dkim, dmarc = await asyncio.gather(
        check_mx(client, name),
        check_spf(client, name, host),
        check_dkim(client, name, selectors),
        check_dmarc(client, name),
    )
    return DomainSetupStatus(
        domain=name,
        smtp_host=host,
        mx=mx,
        spf=spf,
        dkim=dkim,
        dmarc=dmarc,
        checked_at=datetime.now(UTC),
    )
