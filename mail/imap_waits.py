"""What an IMAP connection waits on, light enough for 1,000 idle sessions in one process (B9).

An idle session's Python objects, measured with tracemalloc (docs/benchmarks.md, B9): about
ten empty ``collections.deque``s, ~760 bytes each (CPython allocates a 64-slot block for even
an empty one), inside the asyncio.Events and the Queue that aioimaplib and ``mail.imap_client``
create per connection and per command, were the largest item. These two have the interface
of asyncio's that aioimaplib and the session use and keep their waiters in a list made on the
first wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal


class Event:
    """asyncio.Event's interface (``is_set``, ``set``, ``clear``, ``wait``), the same
    behaviour: ``set`` wakes every waiter, ``wait`` returns at once while set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> Literal[True]:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)


class PushQueue:
    """What aioimaplib and ``ImapSession.wait_for_change`` use of the untagged responses'
    ``asyncio.Queue`` during IDLE (unbounded: ``put``, ``put_nowait``, ``get``, ``get_nowait``,
    ``empty``), without its three deques and Event; one reader at a time. ``listener``, when
    set, is called on every put: ``wait_for_change`` waits on that rather than on a task
    blocked in ``get``."""

    __slots__ = ("_items", "_reader", "listener")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._reader: asyncio.Future[None] | None = None
        self.listener: Callable[[], None] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        if self.listener is not None:
            self.listener()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._items.pop(0)
