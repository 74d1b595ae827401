"""The request rate is counted per key only after the key's secret checked out; everything
else (no key, a malformed, unknown, wrong-secret or revoked key) is counted per address."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx

from storage.api_keys import split_key
from tests.inboxd.test_limits import VIEWER, custom_stack


async def statuses(base_url: str, authorizations: list[str | None]) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def one(authorization: str | None) -> int:
            headers = {"authorization": authorization} if authorization else {}
            response = await http.post("/graphql", json={"query": VIEWER}, headers=headers)
            return response.status_code

        found = []
        for start in range(0, len(authorizations), 50):  # a bounded burst at a time
            found += await asyncio.gather(*(one(a) for a in authorizations[start : start + 50]))
        return found


def bogus_key(prefix: str | None = None) -> str:
    return f"inbx_{prefix or secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


async def test_wrong_secrets_for_a_prefix_do_not_spend_its_keys_budget(
    database_url, certs, keyring, make_tenant
):
    tenant = await make_tenant()
    prefix = split_key(tenant.key)
    assert prefix is not None
    # 100 a minute: however slowly the 800 requests go out (a loaded machine), what refills
    # meanwhile (one every 0.6 s) stays far below the 700 over the limit.
    async with custom_stack(
        database_url, certs, keyring, rate_limit_requests_per_minute=100
    ) as stack:
        # The prefix is public (auditLog shows it); the secret is made up.
        wrong = await statuses(stack.base_url, [f"Bearer {bogus_key(prefix)}"] * 800)
        assert Counter(wrong)[429] >= 400, Counter(wrong)
        # The key's own budget is untouched, although its address has none left.
        real = await statuses(stack.base_url, [f"Bearer {tenant.key}"] * 50)
        assert real == [200] * 50


async def test_a_new_bogus_key_per_request_is_limited_per_address(
    database_url, certs, keyring, make_tenant
):
    tenant = await make_tenant()
    # One a minute: the bucket of an address holds one request and refills after 60 s, longer
    # than this test takes however loaded the machine is.
    async with custom_stack(
        database_url, certs, keyring, rate_limit_requests_per_minute=1
    ) as stack:
        made_up = [f"Bearer {bogus_key()}" for _ in range(20)]
        malformed = [f"Bearer not-a-key-{i}" for i in range(10)]
        answers = await statuses(stack.base_url, [*made_up, *malformed])
        assert Counter(answers) == {200: 1, 429: 29}
        # An anonymous request shares the address's bucket.
        assert await statuses(stack.base_url, [None]) == [429]
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            limited = await http.post(
                "/graphql", json={"query": VIEWER}, headers={"authorization": made_up[0]}
            )
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        error = limited.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert "address" in error["message"]
        # A real key from the same address still has its own budget.
        assert await statuses(stack.base_url, [f"Bearer {tenant.key}"]) == [200]
