"""Messages to one websocket client, in order, never making another client wait.

A send that would block (the client reads slowly) is finished by a task of that connection
alone; meanwhile its newer ``next`` messages replace older unsent ones of the same subscription,
so a slow client gets the latest state, not every state in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

import orjson
from starlette.types import Message, Send


def json_string(value: str) -> str:
    return orjson.dumps(value).decode()


class Outbox:
    """The sending half of a connection (``inboxd.ws_connection.Connection``)."""

    __slots__ = ("_backlog", "_flusher", "gone", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        # The client went away (a send failed); its disconnect is on its way to the reader.
        self.gone = False
        # Messages waiting behind a send that could not complete at once (with the id of
        # the subscription a ``next`` is for); None: no send is waiting.
        self._backlog: list[tuple[str | None, Message]] | None = None
        self._flusher: asyncio.Task[None] | None = None

    def post_next(self, op_id: str, payload: str) -> None:
        message = {
            "type": "websocket.send",
            "text": f'{{"id":{json_string(op_id)},"type":"next","payload":{payload}}}',
        }
        backlog = self._backlog
        if backlog is not None:
            # A slow client gets the latest state, not every state in between.
            for index, (queued_id, _) in enumerate(backlog):
                if queued_id == op_id:
                    backlog[index] = (op_id, message)
                    return
        self._post(message, op_id)

    def post_text(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        self._post({"type": "websocket.send", "text": text})

    def _post(self, message: Message, next_for: str | None = None) -> None:
        """Send ``message`` after those posted before it, without waiting for the client."""
        if self._backlog is not None:
            self._backlog.append((next_for, message))
            return
        if self.gone:
            return
        sending = self.send(message)
        waiting: object = None
        if isinstance(sending, Coroutine):
            try:
                waiting = sending.send(None)
            except StopIteration:
                return  # sent: the common case, no task, no queue
            except Exception:  # the client is gone; its disconnect is on its way to run()
                self.gone = True
                return
        # The send must wait (the client's buffer is full): finish it in a task of this
        # connection, and queue what comes next behind it.
        self._backlog = []
        self._flusher = asyncio.create_task(self._flush(sending, waiting))

    async def _flush(self, sending: Awaitable[None], waiting: object) -> None:
        try:
            if isinstance(sending, Coroutine):
                await _resume(sending, waiting)
            else:
                await sending
            while self._backlog:
                await self.send(self._backlog.pop(0)[1])
        except asyncio.CancelledError:
            raise
        except Exception:
            self.gone = True
        finally:
            self._backlog = None
            self._flusher = None


async def _resume(coroutine: Coroutine[Any, Any, None], waiting: object) -> None:
    """Drive ``coroutine``, started by hand and suspended on ``waiting`` (what its first
    ``send(None)`` yielded), to its end, as an asyncio Task would."""
    try:
        while True:
            if isinstance(waiting, asyncio.Future):
                # The coroutine awaits this future: resume it when the future is done.
                await asyncio.wait((waiting,))
            else:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            try:
                waiting = coroutine.send(None)
            except StopIteration:
                return
    except BaseException:
        coroutine.close()
        raise
