"""What a user reads while a transient failure is retried, and once it gives up."""

from __future__ import annotations

import re

from tests.inboxd.test_verification import (
    create_and_watch,
    inbox_input,
    latest_test,
    servers,  # noqa: F401  (fixture)
)

UNKNOWN_HOST = "mail.no-such-domain-4fe1.example.com"


async def test_host_not_found_has_a_hint_and_retries_count_up(verifier, servers):  # noqa: F811
    tenant = await verifier.tenant()
    input = inbox_input(
        servers["smtp_starttls"].port,
        "STARTTLS",
        servers["imap_tls"].port,
        "TLS",
        email="unknown-host@example.com",
    )
    input["smtp"]["host"] = UNKNOWN_HOST  # type: ignore[index]
    inbox_id, seen = await create_and_watch(verifier, tenant, input)
    limit = verifier.stack.settings.job_max_attempts

    retrying = [s["statusReason"] for s in seen if s["status"] == "PENDING" and s["statusReason"]]
    counts = [re.search(r"Retrying \((\d+) of (\d+)\)", reason) for reason in retrying]
    assert retrying and all(counts), retrying
    numbers = [int(m.group(1)) for m in counts if m]
    assert all(int(m.group(2)) == limit for m in counts if m)
    assert numbers == sorted(numbers) and numbers[0] >= 2 and numbers[-1] <= limit, numbers

    test = await latest_test(tenant, inbox_id)
    assert test["smtp"]["code"] == "HOST_NOT_FOUND"
    assert "spelling" in test["smtp"]["hint"] and "DNS" in test["smtp"]["hint"]
    assert test["attempts"] == limit
