"""Check a sending domain's DNS: MX, SPF, DKIM and DMARC.

`check_domain_setup` never raises for DNS trouble. Each record gets a `RecordCheck` whose state
is one of:

* PASS    - fine as it is (the message may still carry advice);
* WARN    - works, but should be improved; the message says how;
* FAIL    - broken or harmful; the message says what to add or change;
* MISSING - not published (NXDOMAIN or no record of that type); the message gives an example;
* ERROR   - DNS did not answer (timeout, SERVFAIL, refused); the message carries the resolver's
  message. A lookup that fails is never reported as MISSING.

Decisions worth knowing:

* DKIM RSA keys under 1024 bits are FAIL, not WARN: RFC 8301 forbids signing with them and
  major receivers treat their signatures as absent. 1024-2047 bits PASS with advice to rotate
  to 2048. A revoked key (empty p=) is FAIL only when no usable key was found.
* SPF: the SMTP host is "authorised" when check_host() returns pass for each of its addresses.
  A result of fail (-all) is FAIL; softfail/neutral/none is WARN. A DNS error during evaluation
  is ERROR. The lookup count covers every DNS-querying term in the whole include/redirect tree.
* DMARC: the record is looked up at _dmarc.<domain> only (no organisational-domain fallback).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import dns.rdtypes.ANY.MX
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mail.dns_lookup import (
    AddressLookup,
    DnsClient,
    DnsSettings,
    IPAddress,
    Lookup,
    LookupStatus,
    normalize_domain,
)
from mail.dns_spf import (
    LOOKUP_LIMIT,
    SpfNode,
    SpfResult,
    build_tree,
    effective_all,
    evaluate,
    parse_spf,
    select_spf,
)
from mail.presets import PRESETS, Provider

__all__ = [
    "CheckState",
    "DnsSettings",
    "DomainSetupStatus",
    "RecordCheck",
    "check_domain_setup",
]


class CheckState(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    MISSING = "MISSING"
    ERROR = "ERROR"


# How bad a finding is when several are combined into one state; MISSING never combines.
_RANK = {CheckState.PASS: 0, CheckState.WARN: 1, CheckState.ERROR: 2, CheckState.FAIL: 3}
# For DomainSetupStatus.overall: the worst state of the four records.
_OVERALL_RANK = {
    CheckState.PASS: 0,
    CheckState.WARN: 1,
    CheckState.MISSING: 2,
    CheckState.ERROR: 3,
    CheckState.FAIL: 4,
}


@dataclass(frozen=True, slots=True)
class RecordCheck:
    state: CheckState
    records: list[str] = field(default_factory=list)
    message: str = ""  # what to add or change; for PASS, a summary (maybe with advice)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe values only

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "records": list(self.records),
            "message": self.message,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordCheck:
        return cls(
            state=CheckState(data["state"]),
            records=[str(r) for r in data.get("records", [])],
            message=str(data.get("message", "")),
            details=dict(data.get("details", {})),
        )


@dataclass(frozen=True, slots=True)
class DomainSetupStatus:
    domain: str
    smtp_host: str | None
    mx: RecordCheck
    spf: RecordCheck
    dkim: RecordCheck
    dmarc: RecordCheck
    checked_at: datetime  # timezone-aware UTC

    @property
    def overall(self) -> CheckState:
        """The worst state: FAIL > ERROR > MISSING > WARN > PASS."""
        states = (self.mx.state, self.spf.state, self.dkim.state, self.dmarc.state)
        return max(states, key=_OVERALL_RANK.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "smtp_host": self.smtp_host,
            "mx": self.mx.to_dict(),
            "spf": self.spf.to_dict(),
            "dkim": self.dkim.to_dict(),
            "dmarc": self.dmarc.to_dict(),
            "checked_at": self.checked_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSetupStatus:
        checked_at = datetime.fromisoformat(data["checked_at"])
        if checked_at.tzinfo is None:
            checked_at = checked_at.replace(tzinfo=UTC)
        smtp_host = data.get("smtp_host")
        return cls(
            domain=str(data["domain"]),
            smtp_host=None if smtp_host is None else str(smtp_host),
            mx=RecordCheck.from_dict(data["mx"]),
            spf=RecordCheck.from_dict(data["spf"]),
            dkim=RecordCheck.from_dict(data["dkim"]),
            dmarc=RecordCheck.from_dict(data["dmarc"]),
            checked_at=checked_at,
        )


class _Findings:
    """Problems (WARN/ERROR/FAIL) and advice (PASS) collected while checking one record."""

    def __init__(self) -> None:
        self._items: list[tuple[CheckState, str]] = []

    def add(self, state: CheckState, message: str) -> None:
        self._items.append((state, message))

    def advise(self, message: str) -> None:
        self._items.append((CheckState.PASS, message))

    def cap(self, worst: CheckState) -> None:
        """Lower every finding worse than `worst` to `worst`."""
        self._items = [
            (worst if _RANK[state] > _RANK[worst] else state, message)
            for state, message in self._items
        ]

    @property
    def state(self) -> CheckState:
        return max((s for s, _ in self._items), key=_RANK.__getitem__, default=CheckState.PASS)

    def message(self, ok: str) -> str:
        problems = sorted(
            (item for item in self._items if item[0] is not CheckState.PASS),
            key=lambda item: -_RANK[item[0]],
        )
        advice = [m for s, m in self._items if s is CheckState.PASS]
        parts = [m for _, m in problems] if problems else [ok]
        return " ".join(parts + advice)


def _error_check(lookup: Lookup, what: str) -> RecordCheck:
    return RecordCheck(
        CheckState.ERROR,
        message=(
            f"Could not check {what}: {lookup.describe_failure()}. Nothing was concluded about "
            f"the record; try again, and if it keeps failing make sure the domain's DNS servers "
            f"answer."
        ),
        details={"error": lookup.error, "query": f"{lookup.name} {lookup.rdtype}"},
    )


# ---------------------------------------------------------------------------------------------
# MX


async def _check_mx(client: DnsClient, domain: str) -> RecordCheck:
    lookup = await client.lookup(domain, "MX")
    if lookup.failed:
        return _error_check(lookup, f"the MX records of {domain}")
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
    findings = _Findings()
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
        if _is_ip_literal(host):
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


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# SPF

# The include: a provider documents for authorising its outgoing servers.
_PROVIDER_SPF_INCLUDE: dict[Provider, str] = {
    Provider.GMAIL: "_spf.google.com",
    Provider.OFFICE365: "spf.protection.outlook.com",
    Provider.OUTLOOK: "spf.protection.outlook.com",
    Provider.ICLOUD: "icloud.com",
    Provider.ZOHO: "zoho.com",
    Provider.FASTMAIL: "spf.messagingengine.com",
}


def _provider_for_host(host: str) -> Provider | None:
    for preset in PRESETS.values():
        if host == preset.smtp.host or any(
            host == d or host.endswith("." + d) for d in (*preset.domains, *preset.mx_suffixes)
        ):
            return preset.provider
    return None


def _spf_mechanisms_for(smtp_host: str, addresses: Sequence[IPAddress]) -> list[str]:
    """Alternatives that would authorise the SMTP host, best first."""
    options: list[str] = []
    provider = _provider_for_host(smtp_host)
    if provider in _PROVIDER_SPF_INCLUDE:
        options.append(f"include:{_PROVIDER_SPF_INCLUDE[provider]}")
    if addresses:
        options.append(" ".join(f"ip{a.version}:{a}" for a in addresses))
    else:
        options.append(f"a:{smtp_host}")
    return options


def _insert_mechanism(record: str, mechanism: str) -> str:
    tokens = record.split()
    for i, token in enumerate(tokens):
        low = token.lower()
        if low.lstrip("+-~?") == "all" or low.startswith("redirect="):
            return " ".join([*tokens[:i], mechanism, *tokens[i:]])
    return " ".join([*tokens, mechanism, "~all"])


def _merge_spf(records: Sequence[str]) -> str:
    terms: list[str] = []
    ending = "~all"
    for record in records:
        for token in record.split()[1:]:
            low = token.lower()
            if low.lstrip("+-~?") == "all":
                if low in ("-all", "~all") and ending == "~all":
                    ending = low
                continue
            if low.startswith("redirect=") or low in (t.lower() for t in terms):
                continue
            terms.append(token)
    return " ".join(["v=spf1", *terms, ending])


async def _check_spf(client: DnsClient, domain: str, smtp_host: str | None) -> RecordCheck:
    lookup = await client.lookup(domain, "TXT")
    if lookup.failed:
        return _error_check(lookup, f"the SPF record of {domain}")
    records = select_spf(lookup.texts())
    smtp_addresses: AddressLookup | None = None
    if smtp_host:
        smtp_addresses = await client.addresses(smtp_host)
    if not records:
        mechanisms = (
            _spf_mechanisms_for(smtp_host, smtp_addresses.addresses)[0]
            if smtp_host and smtp_addresses
            else "mx"
        )
        return RecordCheck(
            CheckState.MISSING,
            message=(
                f"{domain} has no SPF record, so receivers cannot tell which servers may send "
                f'its mail. Add a TXT record at {domain}: "v=spf1 {mechanisms} ~all" (list '
                f"every service that sends mail as {domain})."
            ),
            details={"status": lookup.status.value},
        )
    if len(records) > 1:
        return RecordCheck(
            CheckState.FAIL,
            records,
            (
                f"{domain} has {len(records)} SPF records; receivers treat that as a permanent "
                f"error (RFC 7208 section 4.5) and SPF fails for all its mail. Merge them into "
                f'one TXT record, e.g. "{_merge_spf(records)}", and delete the others.'
            ),
            {"count": len(records)},
        )
    record = records[0]
    try:
        parse_spf(record)
    except ValueError as exc:
        return RecordCheck(
            CheckState.FAIL,
            records,
            f"The SPF record of {domain} is invalid ({exc}), so receivers ignore it "
            f"(permerror). Correct or remove that term.",
            {"syntax_error": str(exc)},
        )
    tree = await build_tree(client, domain)
    findings = _Findings()
    details: dict[str, Any] = {}

    count = tree.lookup_count()
    details["lookups"] = count
    details["lookup_limit"] = LOOKUP_LIMIT
    details["lookup_breakdown"] = tree.breakdown()
    if count > LOOKUP_LIMIT:
        findings.add(
            CheckState.FAIL,
            f"The SPF record of {domain} needs {count} DNS lookups (include, a, mx, ptr, "
            f"exists and redirect, counted through nested includes); RFC 7208 allows at most "
            f"{LOOKUP_LIMIT}, so receivers return permerror and SPF fails. Remove includes you "
            f"no longer use, or replace include/a/mx terms with the ip4:/ip6: ranges they "
            f"stand for, until the count is {LOOKUP_LIMIT} or less.",
        )
    _spf_tree_findings(tree, findings)

    all_term = effective_all(tree)
    details["all"] = (all_term.qualifier + "all") if all_term else None
    if all_term is None and tree.record is not None and tree.record.redirect is None:
        findings.add(
            CheckState.WARN,
            f"The SPF record of {domain} has no all mechanism, so mail from unlisted servers "
            f'is "neutral": end it with ~all (or -all once every sender is listed).',
        )
    elif all_term is not None and all_term.qualifier == "+":
        findings.add(
            CheckState.FAIL,
            f'The SPF record of {domain} ends with "{all_term.text}", which authorises every '
            f"server on the internet to send as {domain}: change it to ~all or -all.",
        )
    elif all_term is not None and all_term.qualifier == "?":
        findings.add(
            CheckState.WARN,
            f'The SPF record of {domain} ends with "?all" (neutral), which gives receivers no '
            f"guidance: change it to ~all, or -all once every sender is listed.",
        )
    if tree.record is not None and any(t.name == "ptr" for t in tree.record.mechanisms):
        findings.add(
            CheckState.WARN,
            "The SPF record uses ptr, which RFC 7208 says not to use (slow, unreliable, and "
            "some receivers skip it): replace it with ip4:/ip6: ranges or a:/include: terms.",
        )

    details["smtp_host"] = smtp_host
    details["authorised"] = None
    if smtp_host and smtp_addresses is not None:
        await _spf_authorisation(
            client, tree, domain, record, smtp_host, smtp_addresses, findings, details
        )
    ok = f"The SPF record of {domain} is valid ({count}/{LOOKUP_LIMIT} DNS lookups)."
    if details["authorised"]:
        ok += f" It authorises {smtp_host}."
    return RecordCheck(findings.state, records, findings.message(ok), details)


def _spf_tree_findings(tree: SpfNode, findings: _Findings) -> None:
    reported: set[str] = set()
    for node in tree.walk()[1:]:
        if node.problem is None or node.problem in reported:
            continue
        reported.add(node.problem)
        if node.problem_kind == "temperror":
            findings.add(
                CheckState.ERROR,
                f"Could not fetch the SPF record of {node.domain}, which {tree.domain} "
                f"includes: {node.problem}.",
            )
        elif node.absent:
            findings.add(
                CheckState.FAIL,
                f"The SPF record includes {node.domain}, which has no SPF record, so receivers "
                f"return permerror: remove include:{node.domain} or correct the name.",
            )
        else:
            findings.add(
                CheckState.FAIL,
                f"An included SPF record is broken ({node.problem}), so receivers return "
                f"permerror: fix it or remove the include.",
            )


async def _spf_authorisation(
    client: DnsClient,
    tree: SpfNode,
    domain: str,
    record: str,
    smtp_host: str,
    smtp_addresses: AddressLookup,
    findings: _Findings,
    details: dict[str, Any],
) -> None:
    details["smtp_addresses"] = [str(a) for a in smtp_addresses.addresses]
    if not smtp_addresses.found:
        if smtp_addresses.errors:
            findings.add(
                CheckState.ERROR,
                f"Could not resolve the SMTP host {smtp_host} to check it against SPF: "
                f"{'; '.join(smtp_addresses.errors)}.",
            )
        else:
            findings.add(
                CheckState.WARN,
                f"The SMTP host {smtp_host} has no A or AAAA record, so it could not be checked "
                f"against SPF: check the host name.",
            )
        return
    results: list[tuple[IPAddress, SpfResult]] = []
    for address in smtp_addresses.addresses:
        results.append((address, await evaluate(client, tree, address)))
    details["results"] = {
        str(a): {"result": r.result, "term": r.term, "explanation": r.explanation}
        for a, r in results
    }
    failing = [(a, r) for a, r in results if r.result != "pass"]
    details["authorised"] = not failing
    if not failing:
        return
    errors = [r for _, r in failing if r.result == "temperror"]
    if errors:
        findings.add(
            CheckState.ERROR,
            f"Could not finish checking whether SPF authorises {smtp_host}: "
            f"{errors[0].explanation}.",
        )
        return
    if all(r.result == "permerror" for _, r in failing):
        return  # the broken include/lookup count is already reported
    not_passing = [a for a, r in failing if r.result != "permerror"]
    options = _spf_mechanisms_for(smtp_host, not_passing)
    suggestion = " or ".join(options)
    worst = "fail" if any(r.result == "fail" for _, r in failing) else failing[0][1].result
    state = CheckState.FAIL if worst == "fail" else CheckState.WARN
    consequence = (
        "receivers will reject or junk its mail"
        if worst == "fail"
        else f'receivers see "{worst}" and may junk its mail'
    )
    addresses = ", ".join(str(a) for a in not_passing)
    findings.add(
        state,
        f"SPF for {domain} does not authorise the SMTP host {smtp_host} ({addresses}); "
        f"{consequence}. Add {suggestion} before the all mechanism, e.g. "
        f'"{_insert_mechanism(record, options[0])}".',
    )
    details["suggested_mechanisms"] = options


# ---------------------------------------------------------------------------------------------
# DKIM

_DKIM_WEAK_BITS = 1024
_DKIM_GOOD_BITS = 2048


def _dkim_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip() and name.strip() not in tags:
            tags[name.strip()] = value.strip()
    return tags


def _dkim_key(tags: dict[str, str]) -> tuple[str, int | None, str | None]:
    """(key type, bits, problem) of a DKIM key record's tags; problem None means usable."""
    if "v" in tags and tags["v"] != "DKIM1":
        return "", None, f'v={tags["v"]} (must be "DKIM1")'
    key_type = tags.get("k", "rsa").lower() or "rsa"
    if "p" not in tags:
        return key_type, None, "no p= tag, so this is not a DKIM key record"
    p = "".join(tags["p"].split())
    if not p:
        return key_type, None, "revoked"
    try:
        raw = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return key_type, None, "p= is not valid base64"
    if key_type == "rsa":
        try:
            key = load_der_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            return key_type, None, "p= is not a DER-encoded RSA public key"
        if not isinstance(key, rsa.RSAPublicKey):
            return key_type, None, "k=rsa but p= holds a different kind of key"
        return key_type, key.key_size, None
    if key_type == "ed25519":
        try:
            if len(raw) == 32:  # RFC 8463: the raw key
                ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif not isinstance(load_der_public_key(raw), ed25519.Ed25519PublicKey):
                return key_type, None, "k=ed25519 but p= holds a different kind of key"
        except (ValueError, UnsupportedAlgorithm):
            return key_type, None, "p= is not an Ed25519 public key"
        return key_type, 256, None
    return key_type, None, f"unsupported key type k={key_type}"


async def _check_dkim(client: DnsClient, domain: str, selectors: Sequence[str]) -> RecordCheck:
    names = [f"{s}._domainkey.{domain}" for s in selectors]
    lookups = await asyncio.gather(*(client.lookup(n, "TXT") for n in names))
    findings = _Findings()
    per_selector: list[dict[str, Any]] = []
    records: list[str] = []
    usable: list[str] = []
    revoked: list[str] = []
    errors: list[str] = []
    for selector, name, lookup in zip(selectors, names, lookups, strict=True):
        entry: dict[str, Any] = {"selector": selector, "name": name}
        per_selector.append(entry)
        if lookup.failed:
            entry["status"] = "error"
            entry["error"] = lookup.error
            errors.append(f"{selector} ({lookup.error})")
            continue
        texts = [t for t in lookup.texts() if "p=" in t or t.strip().startswith("v=DKIM1")]
        if not texts:
            entry["status"] = "missing"
            continue
        records.extend(texts)
        tags = _dkim_tags(texts[0])
        key_type, bits, problem = _dkim_key(tags)
        entry.update({"key_type": key_type, "bits": bits})
        if len(texts) > 1:
            findings.add(
                CheckState.WARN,
                f"{name} has {len(texts)} DKIM records; receivers may pick either. Keep one.",
            )
        if problem == "revoked":
            entry["status"] = "revoked"
            revoked.append(selector)
            continue
        if problem is not None:
            entry["status"] = "invalid"
            entry["problem"] = problem
            findings.add(
                CheckState.FAIL,
                f"The DKIM record at {name} is unusable: {problem}. Publish the record exactly "
                f"as your mail provider or signing software gives it.",
            )
            continue
        if key_type == "rsa" and bits is not None and bits < _DKIM_WEAK_BITS:
            entry["status"] = "weak"
            findings.add(
                CheckState.FAIL,
                f"The DKIM key at {name} is only {bits} bits; receivers ignore signatures made "
                f"with RSA keys under {_DKIM_WEAK_BITS} bits (RFC 8301). Generate a new "
                f"{_DKIM_GOOD_BITS}-bit key, publish it (ideally under a new selector), switch "
                f"signing to it, then remove {name}.",
            )
            continue
        entry["status"] = "ok"
        usable.append(selector)
        if key_type == "rsa" and bits is not None and bits < _DKIM_GOOD_BITS:
            findings.advise(
                f"The key at {name} is {bits} bits; rotate to a {_DKIM_GOOD_BITS}-bit key "
                f"when convenient."
            )
        if "y" in [f.strip() for f in tags.get("t", "").split(":")]:
            findings.add(
                CheckState.WARN,
                f"The DKIM key at {name} has t=y (testing mode): receivers treat its "
                f"signatures as absent. Remove t=y once signing works.",
            )
        hashes = {h.strip().lower() for h in tags.get("h", "").split(":") if h.strip()}
        if hashes and "sha256" not in hashes:
            findings.add(
                CheckState.WARN,
                f"The DKIM key at {name} allows only h={tags['h']}; SHA-1 signatures are no "
                f"longer accepted (RFC 8301). Change it to h=sha256 or remove the h= tag.",
            )
    details: dict[str, Any] = {
        "selectors": per_selector,
        "found": [e["selector"] for e in per_selector if e["status"] not in ("missing", "error")],
        "usable": usable,
    }
    found = details["found"]
    tried = ", ".join(selectors)
    if not found:
        if errors:
            return RecordCheck(
                CheckState.ERROR,
                message=(
                    f"Could not check DKIM for {domain}: DNS lookups failed for selector(s) "
                    f"{'; '.join(errors)}. Try again; nothing was concluded about DKIM."
                ),
                details=details,
            )
        return RecordCheck(
            CheckState.MISSING,
            message=(
                f"No DKIM key found for {domain} at the selectors tried ({tried}; looked up "
                f"<selector>._domainkey.{domain}). Turn on DKIM signing at your mail provider "
                f"and publish the TXT record it gives you at <selector>._domainkey.{domain}; "
                f"if you already did, enter the selector you used."
            ),
            details=details,
        )
    if revoked:
        revoked_names = ", ".join(f"{s}._domainkey.{domain}" for s in revoked)
        if usable:
            findings.advise(f"Revoked (empty p=) keys remain at {revoked_names}.")
        else:
            findings.add(
                CheckState.FAIL,
                f"The DKIM key at {revoked_names} is revoked (empty p=), and no other usable "
                f"key was found: publish a current key from your mail provider.",
            )
    if errors:
        findings.advise(f"DNS lookups failed for selector(s) {'; '.join(errors)}.")
    ok = f"DKIM keys found for {domain} at selector(s) {', '.join(usable)}."
    return RecordCheck(findings.state, records, findings.message(ok), details)


# ---------------------------------------------------------------------------------------------
# DMARC


def _dmarc_example(domain: str) -> str:
    return f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'


async def _check_dmarc(client: DnsClient, domain: str) -> RecordCheck:
    name = f"_dmarc.{domain}"
    lookup = await client.lookup(name, "TXT")
    if lookup.failed:
        return _error_check(lookup, f"the DMARC record of {domain}")
    records = [t.strip() for t in lookup.texts() if t.strip().startswith("v=DMARC1")]
    if not records:
        return RecordCheck(
            CheckState.MISSING,
            message=(
                f"{domain} has no DMARC record. Add a TXT record at {name}: "
                f"{_dmarc_example(domain)} to start receiving reports, then move to "
                f"p=quarantine and p=reject once the reports show only your own mail."
            ),
            details={"status": lookup.status.value},
        )
    if len(records) > 1:
        return RecordCheck(
            CheckState.FAIL,
            records,
            (
                f"{name} has {len(records)} DMARC records, so receivers ignore all of them "
                f"(RFC 7489 section 6.6.3). Keep exactly one."
            ),
            {"count": len(records)},
        )
    record = records[0]
    tags = {k.lower(): v for k, v in _dkim_tags(record).items()}
    policy = tags.get("p", "").lower()
    rua = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    pct_text = tags.get("pct", "100")
    details: dict[str, Any] = {
        "p": policy or None,
        "sp": tags.get("sp", "").lower() or None,
        "pct": None,
        "rua": rua,
        "adkim": tags.get("adkim", "r"),
        "aspf": tags.get("aspf", "r"),
    }
    findings = _Findings()
    if policy not in ("none", "quarantine", "reject"):
        what = f"p={policy}" if policy else "no p= tag"
        findings.add(
            CheckState.FAIL,
            f"The DMARC record at {name} has {what}; it must say p=none, p=quarantine or "
            f"p=reject. Change it to e.g. {_dmarc_example(domain)}.",
        )
    try:
        pct = int(pct_text)
        if not 0 <= pct <= 100:
            raise ValueError
    except ValueError:
        pct = 100
        findings.add(
            CheckState.FAIL,
            f"The DMARC record at {name} has pct={pct_text}; it must be a number from 0 to "
            f"100. Remove pct= (meaning 100) or fix it.",
        )
    else:
        details["pct"] = pct
    bad_rua = [u for u in rua if not u.lower().startswith("mailto:")]
    if bad_rua:
        findings.add(
            CheckState.WARN,
            f"The DMARC rua= entries {', '.join(bad_rua)} are not mailto: addresses; write "
            f"them as rua=mailto:you@{domain}.",
        )
    no_reports = "" if rua else f" Add rua=mailto:dmarc-reports@{domain} to receive them."
    if policy == "none":
        findings.add(
            CheckState.WARN,
            f"DMARC for {domain} is p=none (monitoring only), so forged mail is still "
            f"delivered. Once the aggregate reports (rua) show your legitimate mail passing, "
            f"move to p=quarantine and then p=reject.{no_reports}",
        )
    elif policy in ("quarantine", "reject"):
        if pct < 100:
            findings.add(
                CheckState.WARN,
                f"DMARC for {domain} applies p={policy} to only {pct}% of failing mail: raise "
                f"it to pct=100 (or remove pct=) once reports look clean.",
            )
        if not rua:
            findings.advise(f"Add rua=mailto:dmarc-reports@{domain} to receive aggregate reports.")
    ok = f"DMARC for {domain} is p={policy}, applied to {pct}% of failing mail."
    if rua:
        ok += f" Reports go to {', '.join(rua)}."
    return RecordCheck(findings.state, records, findings.message(ok), details)


# ---------------------------------------------------------------------------------------------


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
            host = stripped if _is_ip_literal(stripped) else normalize_domain(stripped)
        except ValueError as exc:
            raise ValueError(f"invalid SMTP host: {exc}") from None
    if isinstance(dkim_selectors, str):  # a lone selector, not a sequence of characters
        dkim_selectors = [dkim_selectors]
    selectors = _normalize_selectors(dkim_selectors or settings.default_dkim_selectors)
    client = DnsClient(settings)
    mx, spf, dkim, dmarc = await asyncio.gather(
        _check_mx(client, name),
        _check_spf(client, name, host),
        _check_dkim(client, name, selectors),
        _check_dmarc(client, name),
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
