"""The DMARC check: the policy at _dmarc.<domain> (no organisational-domain fallback)."""

from __future__ import annotations

from typing import Any

# DMARC records use DKIM's tag=value syntax (RFC 7489 section 6.4).
from mail.dns_check_dkim import tag_list
from mail.dns_lookup import DnsClient
from mail.dns_results import CheckState, Findings, RecordCheck, error_check


def _dmarc_example(domain: str) -> str:
    return f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'


async def check_dmarc(client: DnsClient, domain: str) -> RecordCheck:
    name = f"_dmarc.{domain}"
    lookup = await client.lookup(name, "TXT")
    if lookup.failed:
        return error_check(lookup, f"the DMARC record of {domain}")
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
    tags = {k.lower(): v for k, v in tag_list(record).items()}
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
    findings = Findings()
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
