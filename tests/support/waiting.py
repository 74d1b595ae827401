"""Waiting on a condition, the suite's only clock.

A test waits for what it expects to happen (a row's state, a socket closing, a server's
subscriber count), never for a fixed time, and never asserts how long anything took: on a
loaded two-core machine a correct program is sometimes slow. The timeout here only stops a
test that would otherwise hang; it is generous and its expiry says what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

HUNG = 60.0  # seconds: long past anything a passing run needs, even on a loaded machine
POLL = 0.05


async def wait_until(
    condition: Callable[[], Any | Awaitable[Any]],
    what: str,
    *,
    timeout: float = HUNG,
    poll: float = POLL,
) -> Any:
    """Poll ``condition`` (plain or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting (after {timeout:.0f} s): {what}")
        await asyncio.sleep(poll)


def wait_until_sync(
    condition: Callable[[], T], what: str, *, timeout: float = HUNG, poll: float = POLL
) -> T:
    """``wait_until`` for code outside an event loop (test servers' own threads)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting (after {timeout:.0f} s): {what}")
        time.sleep(poll)
    return value


async def subscribed(hub: Any, workspace_id: uuid.UUID, count: int = 1) -> None:
    """Until the server's event hub holds ``count`` watchers for the workspace: from then on a
    change is delivered to the subscription (there is no "subscribed" message in the protocol
    to wait for instead)."""

    def watching() -> bool:
        return sum(1 for w in list(hub._watchers) if w.workspace_id == workspace_id) >= count

    await wait_until(watching, f"{count} subscription(s) of workspace {workspace_id} registered")


async def with_deadline(awaitable: Awaitable[T], what: str, timeout: float = HUNG) -> T:
    """Await ``awaitable``; only a hung one fails, with what it was."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"gave up waiting (after {timeout:.0f} s): {what}") from None


async def loop_turn() -> None:
    """Let the callbacks already scheduled on the event loop run (asyncpg hands query records
    to its loggers with ``call_soon``; a closed server's transports finish aborting): ordering,
    not time."""
    await asyncio.sleep(0)
