"""Reading received mail back: `messages` as a Relay connection (newest first, in pages that
neither skip nor repeat a message) and each of its filters. Mail arrives through a real pymap
server and a real receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Verifier
from tests.inboxd.test_receiving import (
    create_watched,
    mail,
    servers,  # noqa: F401  (a fixture of that module, used here; receiving is tests/conftest's)
)
from tests.support.waiting import wait_until

PAGE = """
query($id: ID!, $first: Int!, $after: String, $filter: MessageFilter) {
  messages(inboxId: $id, first: $first, after: $after, filter: $filter) {
    edges { cursor node { subject folder receivedAt from { address } } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def from_(sender: str, subject: str, body: str = "") -> bytes:
    return (
        mail(subject)
        .replace(b"sender@sender.test", sender.encode())
        .replace(f"Hello, {subject}.".encode(), (body or f"Hello, {subject}.").encode())
    )


async def _page(tenant: Any, inbox_id: str, first: int, after: str | None = None, **flt: Any):
    result = await tenant.client(
        PAGE, {"id": inbox_id, "first": first, "after": after, "filter": flt or None}
    )
    assert not result.errors, result.errors
    return result.data["messages"]


async def _subjects(tenant: Any, inbox_id: str, **flt: Any) -> list[str]:
    page = await _page(tenant, inbox_id, 50, **flt)
    return [e["node"]["subject"] for e in page["edges"]]


async def test_pages_walk_every_message_once_newest_first_and_each_filter_narrows(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    user = "user8@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    subjects = [f"message {n}" for n in range(7)]
    for n, subject in enumerate(subjects):
        sender = "ann@one.test" if n % 2 else "bob@two.test"
        body = "the invoice is attached" if n == 3 else ""
        servers["TLS"].deliver(user, from_(sender, subject, body))

        async def stored(subject: str = subject) -> bool:
            return subject in await _subjects(tenant, inbox_id)

        await wait_until(stored, f"{subject} stored")  # one by one: received in this order

    # Pages of two: every message once, newest first, the last page says it is the last.
    walked: list[str] = []
    after = None
    pages = 0
    while True:
        page = await _page(tenant, inbox_id, 2, after)
        pages += 1
        walked += [e["node"]["subject"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]
    assert walked == list(reversed(subjects))
    assert pages == 4

    # Mail arriving while someone pages does not shift the pages already being walked.
    first_page = await _page(tenant, inbox_id, 2)
    servers["TLS"].deliver(user, from_("cy@three.test", "late"))

    async def late() -> bool:
        return "late" in await _subjects(tenant, inbox_id)

    await wait_until(late, "late stored")
    rest = await _page(tenant, inbox_id, 50, first_page["pageInfo"]["endCursor"])
    assert [e["node"]["subject"] for e in rest["edges"]] == list(reversed(subjects))[2:]

    odd = [s for n, s in enumerate(subjects) if n % 2]
    assert await _subjects(tenant, inbox_id, **{"from": "ANN@one"}) == list(reversed(odd))
    assert await _subjects(tenant, inbox_id, subject="message 5") == ["message 5"]
    assert await _subjects(tenant, inbox_id, search="INVOICE") == ["message 3"]
    assert await _subjects(tenant, inbox_id, search="%") == []  # a wildcard matches literally
    assert await _subjects(tenant, inbox_id, folder="INBOX") == ["late", *reversed(subjects)]
    assert await _subjects(tenant, inbox_id, folder="Archive") == []

    page = await _page(tenant, inbox_id, 50)
    times = {e["node"]["subject"]: e["node"]["receivedAt"] for e in page["edges"]}
    middle = times["message 3"]
    assert await _subjects(tenant, inbox_id, since=middle) == [
        "late",
        *reversed(subjects[3:]),
    ]
    assert await _subjects(tenant, inbox_id, until=middle) == list(reversed(subjects[:3]))
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await _subjects(tenant, inbox_id, since=future) == []


async def test_a_page_size_out_of_range_is_refused_naming_first(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, "user9@example.test")
    for first in (-1, 10_000):
        result = await tenant.client(PAGE, {"id": inbox_id, "first": first})
        assert result.errors, first
        assert "first" in result.errors[0]["message"], result.errors
