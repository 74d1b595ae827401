"""aioimaplib's client on a socket opened elsewhere, hearing every announced arrival.

``mail.imap_session`` opens the connection (the outbound guard's address, TLS as the probes
verify it); aioimaplib speaks IMAP on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, cast

import aioimaplib

from mail.imap_auth import SaslExchange
from mail.imap_waits import Event, PushQueue

_ARRIVALS = re.compile(rb"^\* \d+ (EXISTS|RECENT)", re.IGNORECASE)
# Their EXISTS is the size of the folder being opened, not news.
_OPENING = ("EXAMINE", "SELECT")


# Capability sets as servers sent them, one frozenset shared by every connection that was sent
# the same (at most 256: a server changing its list on each login cannot grow it without end).
_CAPABILITY_SETS: dict[frozenset[str], frozenset[str]] = {}


class Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, telling ``arrived`` of every untagged EXISTS or RECENT.

    aioimaplib files an untagged response under a pending command of its name, else under a
    pending NOOP or IDLE, else drops it ("ignored untagged response"): an EXISTS sent with a
    UID SEARCH or UID FETCH is lost, and the server, having told us, never repeats it.
    Its per-connection Event and Queue, and each command's Event, are ``mail.imap_waits``'.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, lost: Any, arrived: Callable[[], None]
    ) -> None:
        super().__init__(loop, lost)
        self.idle_queue = PushQueue()
        self._idle_event = Event()
        self._arrived = arrived
        self.gone = False
        self.sasl: SaslExchange | None = None  # set during AUTHENTICATE (mail.imap_auth)

    @property
    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    @capabilities.setter
    def capabilities(self, value: Iterable[str]) -> None:
        # aioimaplib assigns a new set on each CAPABILITY and LOGIN; it never changes one.
        offered = frozenset(value)
        if offered not in _CAPABILITY_SETS and len(_CAPABILITY_SETS) < 256:
            _CAPABILITY_SETS[offered] = offered
        self._capabilities = _CAPABILITY_SETS.get(offered, offered)

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
        if not command._event.is_set():  # nor waited on yet: IDLE's lives as long as IDLE
            command._event = Event()
        return await super().execute(command, scrub)

    def _continuation(self, line: bytes) -> None:
        pending = self.pending_sync_command
        if self.sasl is not None and pending is not None and pending.name == "AUTHENTICATE":
            self.transport.write(self.sasl.answer(line) + b"\r\n")  # not logged: a credential
            return
        super()._continuation(line)

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
        self, opener: Any, timeout: float, lost: Event, arrived: Callable[[], None]
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


# --- TLS with a small read buffer -------------------------------------------------------------

# What one read from the socket may hold, and so what the TLS layer keeps per connection.
# asyncio's SSLProtocol (3.11+) allocates and zero-fills 256 KiB per connection (its class
# attribute ``max_size``, in a module with no public API to change it per connection) and
# uvloop's mallocs as much; either fills it on a burst, and the incoming MemoryBIO keeps the
# capacity of the largest burst it was given. Measured (bench/receiving.py, B9, and 50
# ImapSessions side by side): an idle session costs ~290 KiB on asyncio's loop (~50 on
# uvloop's), and ~530-570 KiB on either loop once it has fetched one large message; with this
# layer ~36 KiB idle and ~57 KiB after, on both. Here the socket is read READ_BUFFER bytes
# at a time into one buffer, through the public ``asyncio.BufferedProtocol`` and
# ``ssl.MemoryBIO`` APIs; one buffer serves the connections of an event loop (``read_buffer``).
READ_BUFFER = 16 * 1024
_buffers = threading.local()


def read_buffer() -> memoryview:
    """The read buffer of every TLS layer on this thread's event loop: a read goes from the
    socket into it and straight on into that connection's MemoryBIO (buffer_updated follows
    get_buffer at once, on the loop's thread), so no connection needs a buffer of its own."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_BUFFER))
    return view


class TlsLayer(asyncio.BufferedProtocol):
    """TLS (client side) between a plain transport and ``app``, read READ_BUFFER at a time."""

    def __init__(
        self,
        app: asyncio.Protocol,
        context: ssl.SSLContext,
        server_hostname: str | None,
        handshake: asyncio.Future[None],
        *,
        call_connection_made: bool,
    ) -> None:
        self.app = app
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self.incoming, self.outgoing, server_side=False, server_hostname=server_hostname
        )
        self.buffer = read_buffer()
        self.handshake = handshake
        self.call_connection_made = call_connection_made
        self.transport: asyncio.Transport | None = None
        self.app_transport = TlsTransport(self)
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._handshake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.incoming.write(self.buffer[:nbytes])
        if self.handshake.done():
            self._read()
        else:
            self._handshake()

    def eof_received(self) -> bool:
        self.incoming.write_eof()
        if self.handshake.done():
            self.app.eof_received()
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during TLS"))
            self.handshake.exception()  # retrieved: its opener may have given up on it
        elif not self.handshake.cancelled() and self.handshake.exception() is None:
            self.app.connection_lost(exc or self.error)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()

    def flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None:
            self.transport.write(data)

    def _handshake(self) -> None:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return
        except Exception as exc:
            self.flush()
            self.handshake.set_exception(exc)
            assert self.transport is not None
            self.transport.close()
            return
        self.flush()
        self.handshake.set_result(None)
        if self.call_connection_made:
            self.app.connection_made(self.app_transport)
        self._read()  # what came with the handshake's last flight

    def _read(self) -> None:
        while True:
            try:
                chunk = self.ssl_object.read(READ_BUFFER)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:  # a bad record, or close_notify (SSLZeroReturnError)
                if not isinstance(exc, ssl.SSLZeroReturnError):
                    self.error = exc
                assert self.transport is not None
                self.transport.close()
                break
            if not chunk:
                break
            self.app.data_received(chunk)
        self.flush()


class TlsTransport(asyncio.Transport):
    """What the application protocol writes to: plaintext in, TLS records out."""

    def __init__(self, layer: TlsLayer) -> None:
        super().__init__()
        self._layer = layer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.is_closing():
            return
        self._layer.ssl_object.write(data)
        self._layer.flush()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        layer = self._layer
        if name == "ssl_object":
            return layer.ssl_object
        if name == "peercert":
            return layer.ssl_object.getpeercert()
        if name == "cipher":
            return layer.ssl_object.cipher()
        if layer.transport is None:
            return default
        return layer.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        transport = self._layer.transport
        return transport is None or transport.is_closing()

    def close(self) -> None:
        """close_notify, then close the socket once what is buffered is sent."""
        if self.is_closing():
            return
        with contextlib.suppress(ssl.SSLError):
            self._layer.ssl_object.unwrap()
        self._layer.flush()
        assert self._layer.transport is not None
        self._layer.transport.close()

    def abort(self) -> None:
        if self._layer.transport is not None:
            self._layer.transport.abort()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._layer.app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._layer.app = protocol

    def is_reading(self) -> bool:
        transport = self._layer.transport
        return transport is not None and transport.is_reading()

    def pause_reading(self) -> None:
        if self._layer.transport is not None:
            self._layer.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._layer.transport is not None:
            self._layer.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        transport = self._layer.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False


async def _handshake(layer: TlsLayer, transport: asyncio.Transport, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await layer.handshake
    except BaseException:
        transport.abort()
        raise


async def connect_tls(
    sock: Any,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    server_hostname: str,
    handshake_timeout: float,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """``loop.create_connection(lambda: protocol, sock=sock, ssl=context, ...)`` with a
    READ_BUFFER read buffer; the protocol gets ``connection_made`` once TLS is up."""
    loop = asyncio.get_running_loop()
    layer = TlsLayer(
        protocol, context, server_hostname, loop.create_future(), call_connection_made=True
    )
    transport, _ = await loop.create_connection(lambda: layer, sock=sock)
    await _handshake(layer, transport, handshake_timeout)
    return layer.app_transport, protocol


async def start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    server_hostname: str,
    handshake_timeout: float,
) -> asyncio.Transport:
    """``loop.start_tls`` (STARTTLS) with a READ_BUFFER read buffer: the TLS transport."""
    loop = asyncio.get_running_loop()
    layer = TlsLayer(
        protocol, context, server_hostname, loop.create_future(), call_connection_made=False
    )
    transport.set_protocol(layer)
    layer.connection_made(transport)
    await _handshake(layer, transport, handshake_timeout)
    return layer.app_transport
