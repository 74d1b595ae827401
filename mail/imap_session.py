"""A long-lived IMAP session for receiving mail, on aioimaplib (the stack's IMAP client).

aioimaplib opens its own connection by host name and has no STARTTLS. Here it gets a socket
to the address the outbound guard checked (``network.resolve_target``), TLS verified against
the host name with the probes' contexts (``mail.tls``, pinning included), and STARTTLS on its
transport, both through ``mail.imap_client``'s TLS layer (a 16 KiB read buffer). Mailboxes
are opened with EXAMINE and bodies fetched with BODY.PEEK, so watching never changes a flag;
fetching is ``mail.imap_fetch``'s. Where the server offers CONDSTORE, EXAMINE asks for it and
reports HIGHESTMODSEQ (``mail.imap_changes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import aioimaplib

from mail.endpoint import Endpoint
from mail.failures import ProbeFailure
from mail.imap_auth import log_in
from mail.imap_changes import MODSEQ_TAIL, highest_modseq
from mail.imap_client import Client, connect_tls, start_tls
from mail.imap_fetch import UID as UID  # where callers look
from mail.imap_fetch import WHOLE_BELOW as WHOLE_BELOW
from mail.imap_fetch import Fetched as Fetched
from mail.imap_fetch import MessageFetches
from mail.imap_mailbox import UIDVALIDITY, MailboxWrites, network_error, quote_mailbox
from mail.imap_mailbox import ImapSessionError as ImapSessionError  # where callers look
from mail.imap_waits import Event, PushQueue
from mail.network import NetworkPolicy, TargetError, open_socket, resolve_target
from mail.presets import Security
from mail.results import ProbeCode
from mail.tls import negotiate

_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_STATUS_UIDNEXT = re.compile(rb"UIDNEXT (\d+)", re.IGNORECASE)
_CHANGES = re.compile(rb"^\d+ (EXISTS|RECENT|EXPUNGE|FETCH)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    ca_file: str | None = None
    fetch_batch: int = 20
    max_message_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Mailbox:
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None = None  # CONDSTORE: the folder's, when EXAMINEd or STATUSed


class ImapSession(MessageFetches, MailboxWrites):
    def __init__(
        self,
        client: Client,
        lost: Event,
        arrivals: Event,
        settings: SessionSettings,
    ) -> None:
        self._client = client
        self._lost = lost
        # Set by any untagged EXISTS or RECENT (outside EXAMINE), whatever command it came
        # with: the server will not repeat it during the next IDLE.
        self._arrivals = arrivals
        self._settings = settings
        self._woken = Event()  # ``wake``: stop waiting, the caller has work to do
        self._ring: Callable[[], None] | None = None  # ends the wait of ``wait_for_change``
        self._ended_idle: object | None = None  # the IDLE command DONE was sent for

    def _end_idle(self) -> None:
        """Send DONE for the pending IDLE, once: a second DONE is a command to the server
        (``DONE BAD``), an answer aioimaplib takes for a broken connection."""
        idle = self._client.protocol.pending_sync_command
        if self._client.has_pending_idle() and idle is not self._ended_idle:
            self._ended_idle = idle
            self._client.idle_done()

    def wake(self) -> None:
        """End the current or next ``wait_for_change`` or ``wait_polling`` early."""
        self._woken.set()
        if self._ring is not None:
            self._ring()

    @property
    def arrivals_noticed(self) -> bool:
        """The server announced mail since ``forget_arrivals``."""
        return self._arrivals.is_set()

    def forget_arrivals(self) -> None:
        self._arrivals.clear()

    @property
    def idle_supported(self) -> bool:
        return "IDLE" in self._client.protocol.capabilities

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self._client.protocol.capabilities

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @classmethod
    async def open(cls, endpoint: Endpoint, settings: SessionSettings) -> ImapSession:
        """Connected, TLS as configured, logged in. Raises ImapSessionError."""
        try:
            target = await resolve_target(endpoint.host, endpoint.port, settings.network)
        except TargetError as exc:
            raise ImapSessionError(exc.code.value, str(exc)) from None
        try:
            session = await cls._connect(endpoint, settings, target)
        except ImapSessionError:
            raise
        except ProbeFailure as exc:  # the certificate (mail.tls explains what to do)
            raise ImapSessionError(exc.code.value, str(exc), hint=exc.hint) from None
        except Exception as exc:
            raise network_error(exc) from None
        try:
            await session._login(endpoint)
        except BaseException:
            await session.close()
            raise
        return session

    @classmethod
    async def _connect(
        cls, endpoint: Endpoint, settings: SessionSettings, target: Any
    ) -> ImapSession:
        timeout = settings.connect_timeout
        implicit = endpoint.security is Security.TLS

        async def open_with(context: ssl.SSLContext | None) -> ImapSession:
            lost = Event()

            async def opener(protocol: Any) -> Any:
                sock = await open_socket(target, timeout)
                if implicit:
                    assert context is not None  # TLS with a small read buffer (imap_client)
                    return await connect_tls(sock, protocol, context, target.host, timeout)
                return await asyncio.get_running_loop().create_connection(
                    lambda: protocol, sock=sock
                )

            arrivals = Event()
            client = Client(opener, settings.command_timeout, lost, arrivals.set)
            session = cls(client, lost, arrivals, settings)
            try:
                # Bounded by aioimaplib's own timeout (command_timeout).
                await session._client.wait_hello_from_server()
                if endpoint.security is Security.STARTTLS:
                    assert context is not None
                    await session._starttls(context, target.host)
            except BaseException:
                await session.close()
                raise
            return session

        async def close(session: ImapSession) -> None:
            await session.close()

        if endpoint.security is Security.NONE:
            return await open_with(None)
        session, _ = await negotiate(
            open_with,
            lambda s: s._client.protocol.transport.get_extra_info("ssl_object"),
            close,
            ca_file=settings.ca_file,
            pin=endpoint.tls_certificate_sha256,
        )
        return session

    async def _starttls(self, context: ssl.SSLContext, host: str) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapSessionError(
                ProbeCode.STARTTLS_UNSUPPORTED.value,
                "The server does not offer STARTTLS.",
                hint="Use port 993 with security TLS.",
            )
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), self._settings.connect_timeout)
        if response.result != "OK":
            raise ImapSessionError(
                ProbeCode.STARTTLS_UNSUPPORTED.value, "The server refused STARTTLS."
            )
        protocol.transport = await start_tls(
            protocol.transport, protocol, context, host, self._settings.connect_timeout
        )
        # Asked again: capabilities sent before TLS may have been forged.
        await asyncio.wait_for(protocol.capability(), self._settings.command_timeout)

    async def _login(self, endpoint: Endpoint) -> None:
        await log_in(self._client, endpoint)  # LOGIN, or XOAUTH2 / OAUTHBEARER
        protocol = self._client.protocol
        await asyncio.wait_for(protocol.capability(), self._settings.command_timeout)

    async def examine(self, folder: str) -> Mailbox:
        """Open ``folder`` read-only: its UIDVALIDITY, UIDNEXT and, with CONDSTORE, its
        HIGHESTMODSEQ (None where the server keeps none for it: NOMODSEQ)."""
        condstore = " (CONDSTORE)" if self.condstore else ""
        response = await self._client.examine(quote_mailbox(folder) + condstore)
        if response.result != "OK":
            raise ImapSessionError(
                "FOLDER_NOT_FOUND", f"The server has no folder {folder!r}.", hint="Check folders."
            )
        # aioimaplib moves to SELECTED only on SELECT; EXAMINE selects just the same.
        self._client.protocol.state = aioimaplib.SELECTED
        text = b"\n".join(bytes(line) for line in response.lines)
        validity, uidnext = UIDVALIDITY.search(text), _UIDNEXT.search(text)
        if validity is None:
            raise ImapSessionError("PROTOCOL_ERROR", "The server sent no UIDVALIDITY.")
        modseq = highest_modseq(text) if condstore else None
        if uidnext is None:  # optional before IMAP4rev2: ask for it
            return Mailbox(int(validity.group(1)), (await self.status(folder)).uidnext, modseq)
        return Mailbox(int(validity.group(1)), int(uidnext.group(1)), modseq)

    async def status(self, folder: str) -> Mailbox:
        """``folder``'s UIDNEXT (and HIGHESTMODSEQ, with CONDSTORE) by STATUS, on a connection
        that has not opened it; its UIDVALIDITY is not asked (0)."""
        items = "(UIDNEXT HIGHESTMODSEQ)" if self.condstore else "(UIDNEXT)"
        response = await self._client.status(quote_mailbox(folder), items)
        text = b" ".join(bytes(x) for x in response.lines)
        match = _STATUS_UIDNEXT.search(text)
        if match is None:
            raise ImapSessionError("PROTOCOL_ERROR", "The server sent no UIDNEXT.")
        return Mailbox(0, int(match.group(1)), highest_modseq(text, status=True))

    async def search(self, *criteria: str) -> list[int]:
        response = await self._client.uid_search(*criteria, charset=None)
        if response.result != "OK":
            raise ImapSessionError("PROTOCOL_ERROR", "The server refused UID SEARCH.")
        uids: list[int] = []
        # aioimaplib hands the untagged "* SEARCH 1 2" over as "1 2"; the last line is the
        # tagged completion.
        for line in response.lines[:-1]:  # "1 2 (MODSEQ 9)" answers a MODSEQ criterion
            words = MODSEQ_TAIL.sub(b"", bytes(line)).split()
            if words[:1] == [b"SEARCH"]:
                words = words[1:]
            if all(w.isdigit() for w in words):
                uids.extend(int(w) for w in words)
        return sorted(uids)

    async def uids_after(self, last_uid: int) -> list[int]:
        # "n:*" always matches the highest UID, even below n: filtered here.
        return [uid for uid in await self.search("UID", f"{last_uid + 1}:*") if uid > last_uid]

    async def uids_since(self, day: date) -> list[int]:
        return await self.search("SINCE", day.strftime("%d-%b-%Y"))

    async def wait_for_change(
        self, within: float, arrived_before: Callable[[], Awaitable[bool]]
    ) -> None:
        """IDLE until the server reports a change, the connection drops or ``within`` passes
        (a NOOP then checks the connection is alive, unless the server ended IDLE with OK).

        Once IDLE is accepted, ``arrived_before`` is asked whether mail came between the last
        read and the start of IDLE: a server may report only changes made after IDLE began
        (pymap's in-memory backend does), and nothing here would otherwise hear of that mail
        before ``within`` ends. When it says so, or an EXISTS came with IDLE's acceptance,
        IDLE ends at once so the caller reads again; so it does on ``wake``."""
        client = self._client
        queue: PushQueue = client.protocol.idle_queue
        while not queue.empty():  # what came after the last IDLE's end: read since
            queue.get_nowait()
        try:  # aioimaplib waits for the server's "+" without a timeout of its own
            idle = await asyncio.wait_for(
                client.idle_start(timeout=within), self._settings.command_timeout
            )
        except TimeoutError:
            raise ImapSessionError(
                "CONNECTION_LOST", "The IMAP server did not accept IDLE in time."
            ) from None
        ended: aioimaplib.Response | None = None  # how the server answered IDLE's DONE
        try:
            changed = self.arrivals_noticed or self._woken.is_set() or await arrived_before()
            while not changed and not self._lost.is_set():
                # One task per idle inbox besides aioimaplib's IDLE command (B9): no task
                # blocked in the queue's get or the wake event's wait, but one future that
                # whatever ends the wait resolves: a push (the queue's listener), ``wake``,
                # or the end of the IDLE command (a lost connection ends it too:
                # Protocol.connection_lost).
                signal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                ring = functools.partial(_resolve, signal)
                queue.listener = self._ring = ring
                idle.add_done_callback(ring)
                quiet = asyncio.get_running_loop().call_later(within + 5, ring)
                if not queue.empty() or self._woken.is_set() or idle.done():
                    ring()
                try:
                    await signal
                finally:
                    queue.listener = self._ring = None
                    idle.remove_done_callback(ring)
                    quiet.cancel()
                    signal.cancel()
                if queue.empty():  # woken, IDLE ended, or no word from the server in time
                    break
                lines = queue.get_nowait()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                changed = any(_CHANGES.match(bytes(line)) for line in lines)
        finally:
            if not self._lost.is_set() and client.has_pending_idle():
                self._end_idle()
                with contextlib.suppress(asyncio.TimeoutError):
                    ended = await asyncio.wait_for(idle, self._settings.command_timeout)
        self._woken.clear()
        if ended is None or ended.result != "OK" or self._lost.is_set():
            # IDLE's own OK shows the connection alive; without it, a NOOP asks.
            await self.check_alive()

    async def wait_polling(self, interval: float) -> None:
        waiters = {asyncio.ensure_future(e.wait()) for e in (self._lost, self._woken)}
        try:
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._woken.clear()
        await self.check_alive()

    async def check_alive(self) -> None:
        if self._lost.is_set():
            raise ImapSessionError("CONNECTION_LOST", "The IMAP connection was lost.")
        response = await self._client.noop()
        if response.result != "OK":
            raise ImapSessionError("CONNECTION_LOST", "The server did not answer NOOP.")

    async def close(self) -> None:
        """Log out politely if the connection is up (within 2 s); close it in any case, also
        when cancelled while logging out: a watcher's connection left open would go on
        watching the mailbox after its lease was handed to another process."""
        client = self._client
        protocol = client.protocol
        logout: asyncio.Future[Any] | None = None
        try:
            if protocol is not None and protocol.transport is not None and not self._lost.is_set():
                self._end_idle()  # else LOGOUT waits for the end of an IDLE never ended
                # Its end always retrieved: cut short (2 s, or the caller cancelled), it is
                # cancelled below, as the connection is aborted.
                logout = asyncio.ensure_future(client.logout())
                logout.add_done_callback(_retrieved)
                await asyncio.wait([logout], timeout=2.0)
        finally:
            if logout is not None:
                logout.cancel()
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            for leftover in list(client.tasks):  # an IDLE the server never ended, say
                leftover.cancel()
            task = getattr(client, "_client_task", None)
            if task is not None and not task.done():
                task.cancel()
        if task is not None:
            # asyncio.wait, not ``await task``: a cancellation of the caller must propagate.
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: the connection is closed either way


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _resolve(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)
