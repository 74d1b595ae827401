"""The DKIM check: keys published at the domain's selectors, and how strong they are.

RSA keys under 1024 bits are FAIL, not WARN: RFC 8301 forbids signing with them and major
receivers treat their signatures as absent. 1024-2047 bits PASS with advice to rotate to 2048.
A revoked key (empty p=) is FAIL only when no usable key was found.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mail.dns_lookup import DnsClient
from mail.dns_results import CheckState, Findings, RecordCheck

_DKIM_WEAK_BITS = 1024
_DKIM_GOOD_BITS = 2048


def tag_list(text: str) -> dict[str, str]:
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


async def check_dkim(client: DnsClient, domain: str, selectors: Sequence[str]) -> RecordCheck:
    names = [f"{s}._domainkey.{domain}" for s in selectors]
    lookups = await asyncio.gather(*(client.lookup(n, "TXT") for n in names))
    findings = Findings()
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
        tags = tag_list(texts[0])
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
