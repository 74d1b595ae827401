"""The MX check of a sending domain: are its mail hosts there, and do they resolve."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import dns.rdtypes.ANY.MX

from mail.dns_lookup import DnsClient, LookupStatus
from mail.dns_results import CheckState, Findings, RecordCheck, error_check


async def check_mx(client: DnsClient, domain: str) -> RecordCheck:
    lookup = await client.lookup(domain, "MX")
    if lookup.failed:
        return error_check(lookup, f"the MX records of {domain}")
    example = f'"{domain}. 3600 IN MX 10 mail.{domain}." (or the MX hosts your provider gives you)'
    if lookup.missing:
        if lookup.status is LookupStatus.NXDOMAIN:
            lead = f"{domain} does not exist in DNS (NXDOMAIN), so"
        else:
            lead = f"{domain} has no MX records, so"
        return RecordCheck(
            CheckState.MISSING,
            message=(
                f"{lead} nobody can reliably deliver mail to it. Add an MX record pointing at "
                f"the server that receives your mail, e.g. {example}."
            ),
            details={"status": lookup.status.value},
        )
    mxs = sorted(
        (r for r in lookup.rdatas if isinstance(r, dns.rdtypes.ANY.MX.MX)),
        key=lambda r: (r.preference, r.exchange.to_text()),
    )
    records = [r.to_text() for r in mxs]
    null = [r for r in mxs if r.exchange.to_text() == "."]
    if null:
        if len(mxs) == 1 and null[0].preference == 0:
            message = (
                f'{domain} publishes a null MX record ("0 .", RFC 7505): the domain declares '
                f"it accepts no mail, so replies and bounces to it are refused. If this domain "
                f"should receive mail, delete the null MX and add MX records for your mail "
                f"provider, e.g. {example}."
            )
        else:
            message = (
                f'{domain} mixes a null MX record (".", RFC 7505, "accepts no mail") with real '
                f'MX hosts. Delete the "{null[0].to_text()}" record and keep the others.'
            )
        return RecordCheck(CheckState.FAIL, records, message, {"null_mx": True})
    hosts = list(dict.fromkeys(r.exchange.to_text(omit_final_dot=True).lower() for r in mxs))
    resolved = await asyncio.gather(*(client.addresses(h) for h in hosts))
    findings = Findings()
    host_details: list[dict[str, Any]] = []
    usable = 0
    for host, addresses in zip(hosts, resolved, strict=True):
        prefs = [r.preference for r in mxs if r.exchange.to_text(omit_final_dot=True) == host]
        host_details.append(
            {
                "host": host,
                "preference": min(prefs) if prefs else None,
                "addresses": [str(a) for a in addresses.addresses],
                "errors": list(addresses.errors),
            }
        )
        if is_ip_literal(host):
            findings.add(
                CheckState.FAIL,
                f"MX host {host} is an IP address, which MX records may not contain: create an "
                f"A record such as mail.{domain} for it and point the MX record at that name.",
            )
            continue
        if addresses.found:
            usable += 1
            if addresses.canonical_name and addresses.canonical_name != host:
                findings.add(
                    CheckState.WARN,
                    f"MX host {host} is an alias (CNAME) for {addresses.canonical_name}; "
                    f"RFC 5321 requires MX records to name the host itself. Point the MX "
                    f"record at {addresses.canonical_name}.",
                )
        elif addresses.errors:
            findings.add(
                CheckState.ERROR,
                f"Could not resolve MX host {host}: {'; '.join(addresses.errors)}.",
            )
        else:
            findings.add(
                CheckState.FAIL,
                f"MX host {host} has no A or AAAA record, so mail cannot be delivered to it: "
                f"add an address record for {host} or change the MX record to a host that has "
                f"one.",
            )
    if usable and findings.state is CheckState.FAIL:
        # Other MX hosts still work; the broken ones only cost retries.
        findings.cap(CheckState.WARN)
    ok = f"{domain} receives mail at {', '.join(hosts)}."
    return RecordCheck(
        findings.state,
        records,
        findings.message(ok),
        {"hosts": host_details, "null_mx": False},
    )


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
