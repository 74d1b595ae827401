"""The SPF check: does the domain's SPF record authorise the SMTP host inboxd sends through.

The SMTP host is "authorised" when check_host() (mail.dns_spf) returns pass for each of its
addresses. A result of fail (-all) is FAIL; softfail/neutral/none is WARN. A DNS error during
evaluation is ERROR. The lookup count covers every DNS-querying term in the whole
include/redirect tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mail.dns_lookup import AddressLookup, DnsClient, IPAddress
from mail.dns_results import CheckState, Findings, RecordCheck, error_check
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


async def check_spf(client: DnsClient, domain: str, smtp_host: str | None) -> RecordCheck:
    lookup = await client.lookup(domain, "TXT")
    if lookup.failed:
        return error_check(lookup, f"the SPF record of {domain}")
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
    findings = Findings()
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


def _spf_tree_findings(tree: SpfNode, findings: Findings) -> None:
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
    findings: Findings,
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
