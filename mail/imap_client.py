"""aioimaplib's client on a socket opened elsewhere, hearing every announced arrival.

``mail.imap_session`` opens the connection (the outbound guard's address, TLS as the probes
verify it); aioimaplib speaks IMAP on it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from typing import Any

import aioimaplib

_ARRIVALS = re.compile(rb"^\* \d+ (EXISTS|RECENT)", re.IGNORECASE)
# Their EXISTS is the size of the folder being opened, not news.
_OPENING = ("EXAMINE", "SELECT")


class Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, telling ``arrived`` of every untagged EXISTS or RECENT.

    aioimaplib files an untagged response under a pending command of its name, else under a
    pending NOOP or IDLE, else drops it ("ignored untagged response"): an EXISTS sent with a
    UID SEARCH or UID FETCH is lost, and the server, having told us, never repeats it.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, lost: Any, arrived: Callable[[], None]
    ) -> None:
        super().__init__(loop, lost)
        self._arrived = arrived
        self.gone = False

    def connection_lost(self, exc: Exception | None) -> None:
        """End every command still waiting for an answer. aioimaplib leaves them to their own
        timeouts, and some have none: the CAPABILITY it sends after the greeting (holding its
        state lock, so that even a cancelled wait for the greeting never returns) and IDLE
        before the server's "+" (a watcher would wait on a dead connection forever)."""
        super().connection_lost(exc)
        self.gone = True
        for task in self.tasks:  # the greeting's task, failing now: retrieved, not leaked
            task.add_done_callback(_retrieve)
        waiting = [self.pending_sync_command, *self.pending_async_commands.values()]
        for command in waiting:
            if command is not None:
                command.close(b"connection lost", "BYE")

    async def execute(self, command: aioimaplib.Command, scrub: str | None = None) -> Any:
        if self.gone:  # aioimaplib would send it into the void and wait for its timeout
            raise aioimaplib.Abort(f"{command.name}: the connection is lost")
        return await super().execute(command, scrub)

    def _untagged_response(self, line: bytes) -> Any:
        opening = self.pending_sync_command is not None and (
            self.pending_sync_command.name in _OPENING
        )
        if not opening and _ARRIVALS.match(line):
            self._arrived()
        return super()._untagged_response(line)


class Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client on a connection opened by ``opener`` instead of by host name."""

    def __init__(
        self, opener: Any, timeout: float, lost: asyncio.Event, arrived: Callable[[], None]
    ) -> None:
        self._opener = opener
        self._arrived = arrived
        self._lost = lost
        super().__init__(timeout=timeout, conn_lost_cb=lambda _exc: lost.set())

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        running = asyncio.get_running_loop()
        self.protocol = Protocol(running, conn_lost_cb, self._arrived)
        self._client_task = running.create_task(self._opener(self.protocol))
        self._client_task.add_done_callback(_retrieve)  # even if its waiter was cancelled

    async def idle(self) -> Any:
        # ``idle_start`` runs this as a task of its own and, when IDLE fails, raises an Abort
        # of its own without retrieving the task's: a connection already lost (Protocol.execute)
        # answers here like a server's BYE instead, so no exception is left unretrieved.
        try:
            return await super().idle()
        except aioimaplib.Abort:
            return aioimaplib.Response("BYE", [b"the connection is lost"])

    async def wait_hello_from_server(self) -> None:
        # Not aioimaplib's: its wait_for task is orphaned, error and all, by a cancelled caller
        # ("Task exception was never retrieved" when a receiver stops mid-connect); and its
        # wait for the greeting is a Condition whose lock aioimaplib's greeting task holds while
        # it waits for CAPABILITY, so a wait given up (timeout, cancel, hang-up) must end the
        # connection, which ends that command and frees the lock, before it can return.
        async with asyncio.timeout(self.timeout):
            await self._client_task
        hello = asyncio.ensure_future(self.protocol.wait("AUTH|NONAUTH"))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({hello, lost}, timeout=self.timeout, return_when="FIRST_COMPLETED")
        finally:
            lost.cancel()
            if not hello.done():
                if self.protocol.transport is not None:
                    self.protocol.transport.abort()
                hello.cancel()
                hello.add_done_callback(_retrieve)
        if not hello.done() or hello.cancelled():
            raise aioimaplib.Abort("the server hung up or went quiet before its greeting ended")
        hello.result()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
