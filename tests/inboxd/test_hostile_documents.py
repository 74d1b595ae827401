"""No request, with or without an API key, holds the event loop: hostile documents are
refused in time linear in their size, and new documents are checked off the loop.

The server runs in this test's event loop; the hostile requests come from another thread (so
the client's own work is not counted). A ticker on the loop records, between two of its
ticks, how much CPU time the loop's thread spent: that is how long one step of the loop held
it, whatever else the machine is doing (wall-clock lag would also count the time other
processes took the core). The issue's bound: 50 ms.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import Stack, Tenant

HOLD_LIMIT_SECONDS = 0.050


def fragment_chain(levels: int, field: str = "inboxUsage") -> str:
    """``fragment F1 on Viewer { ...F0 ...F0 }`` ... : 2^levels spreads when walked naively."""
    fragments = [f"fragment F0 on Viewer {{ {field} }}"]
    fragments += [
        f"fragment F{i} on Viewer {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels)
    ]
    return "{ viewer { ...F%d } }\n%s" % (levels - 1, "\n".join(fragments))


def aliased_chain(levels: int) -> str:
    """The same doubling, with an alias in every fragment: an alias count of ~2^levels."""
    fragments = ["fragment A0 on Viewer { a: inboxUsage }"]
    fragments += [
        f"fragment A{i} on Viewer {{ a{i}: inboxUsage ...A{i - 1} ...A{i - 1} }}"
        for i in range(1, levels)
    ]
    return "{ viewer { ...A%d } }\n%s" % (levels - 1, "\n".join(fragments))


HOSTILE = {
    "fragment chain F40": fragment_chain(41),
    "aliased fragment chain": aliased_chain(30),
    "nesting past the depth limit": "{ " + "viewer { workspace { " * 30 + "id" + " } }" * 30 + " }",
    "1,900 repeated fields": "{ viewer { " + "inboxUsage " * 1_900 + "} }",
    "over the token limit": "{ " + "viewer { inboxUsage } " * 1_500 + "}",
    "unterminated": "{ viewer { " * 900,
}


class LoopHold:
    """The longest CPU time the loop's thread spent between two ticks of a 2 ms ticker."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_wall = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.002)
            now_cpu, now_wall = time.thread_time(), time.perf_counter()
            self.longest = max(self.longest, now_cpu - cpu)
            self.longest_wall = max(self.longest_wall, now_wall - wall - 0.002)
            cpu, wall = now_cpu, now_wall

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def measured() -> Iterator[LoopHold]:
    hold = LoopHold()
    task = asyncio.get_running_loop().create_task(hold.run())
    try:
        yield hold
    finally:
        hold.stop()
        task.cancel()


def post_all(base_url: str, key: str | None, documents: list[str]) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        answers = [client.post("/graphql", json={"query": d}, headers=headers) for d in documents]
        # /healthz answers right after, on the same loop.
        assert client.get("/healthz").status_code == 200
        return answers


async def run_hostile(
    stack: Stack, key: str | None, documents: list[str]
) -> tuple[LoopHold, list[httpx.Response]]:
    with measured() as hold:
        result: list[list[httpx.Response]] = []
        thread = threading.Thread(
            target=lambda: result.append(post_all(stack.base_url, key, documents)), daemon=True
        )
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
    return hold, result[0]


@pytest.mark.parametrize("authenticated", [False, True], ids=["no key", "with a key"])
async def test_hostile_documents_never_hold_the_loop(
    stack: Stack, tenant: Tenant, authenticated: bool
) -> None:
    # Each text made unique per run, so the documents are new to the server's cache.
    salt = f"# {time.time_ns()} {authenticated}\n"
    documents = [salt + text for text in HOSTILE.values()]
    hold, responses = await run_hostile(stack, tenant.key if authenticated else None, documents)
    for name, response in zip(HOSTILE, responses, strict=True):
        body = response.json()
        assert response.status_code in (200, 400), (name, response.status_code)
        assert body.get("errors"), (name, body)
    messages = {
        name: r.json()["errors"][0]["message"] for name, r in zip(HOSTILE, responses, strict=True)
    }
    assert "exceeds maximum operation depth" in messages["nesting past the depth limit"]
    assert "asks for inboxUsage more than 20 times" in messages["fragment chain F40"]
    assert "asks for a more than 20 times" in messages["aliased fragment chain"]
    assert "asks for inboxUsage more than 20 times" in messages["1,900 repeated fields"]
    assert "tokens" in messages["over the token limit"]
    held, lag = hold.longest * 1000, hold.longest_wall * 1000
    print(f"longest hold of the loop {held:.1f} ms, longest wall-clock lag {lag:.1f} ms")
    assert hold.longest < HOLD_LIMIT_SECONDS, f"the loop was held {held:.1f} ms (lag {lag:.1f} ms)"


async def test_limits_change_no_answer_within_them(tenant: Tenant) -> None:
    """Linear checks, same answers: a chain within the limits runs as before, and the
    specification's errors still come after them."""
    response = await tenant.client(fragment_chain(4))  # inboxUsage 8 times: merged into one
    assert response.data == {"viewer": {"inboxUsage": 0}}
    many = "{ " + " ".join(f"a{i}: viewer {{ inboxUsage }}" for i in range(16)) + " }"
    assert "16 aliases found. Allowed: 15" in (await tenant.client(many)).errors[0]["message"]
    response = await tenant.client("{ viewer { inboxUsage nope } }")
    assert response.errors[0]["message"] == "Cannot query field 'nope' on type 'Viewer'."
