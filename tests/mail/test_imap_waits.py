"""mail.imap_waits' Event and PushQueue behave as the asyncio ones they stand in for, as far as
aioimaplib and the receiving session use them."""

from __future__ import annotations

import asyncio

import pytest

from mail.imap_waits import Event, PushQueue
from tests.support.waiting import loop_turn, with_deadline


async def test_event_set_wakes_every_waiter_and_a_cancelled_waiter_is_forgotten() -> None:
    event = Event()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await loop_turn()
    waiters[0].cancel()
    await asyncio.gather(waiters[0], return_exceptions=True)
    assert not any(w.done() for w in waiters[1:])
    event.set()
    assert await with_deadline(asyncio.gather(*waiters[1:]), "both waiters woken") == [True, True]
    assert event.is_set() and await event.wait() is True  # set: returns at once
    event.clear()
    again = asyncio.create_task(event.wait())
    await loop_turn()
    assert not again.done()
    event.set()
    assert await with_deadline(again, "woken after clear and set") is True


async def test_push_queue_hands_items_over_in_order_and_tells_its_listener() -> None:
    queue = PushQueue()
    told: list[int] = []
    queue.listener = lambda: told.append(1)
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    reader = asyncio.create_task(queue.get())
    await loop_turn()
    queue.put_nowait("first")
    await queue.put("second")
    assert await with_deadline(reader, "the waiting reader gets the first") == "first"
    assert queue.get_nowait() == "second" and queue.empty()
    assert len(told) == 2
