"""Real mail servers for tests, listening on 127.0.0.1 only, on ephemeral ports.

- `make_certs`: a trustme CA with server certificates, plus a CA nobody trusts.
- `SmtpServer`: aiosmtpd with AUTH PLAIN/LOGIN against a users dict, in STARTTLS, implicit
  TLS, plaintext and plaintext-without-AUTH modes; keeps received messages in memory;
  refuses recipients or messages with scripted replies (`rcpt_replies`, `data_reply`);
  counts connections, logins and QUITs, caps messages per connection (421, as real servers
  do) and hangs up idle connections on demand (`drop_connections`).
- `ImapServer`: pymap's in-memory backend, in implicit TLS, STARTTLS or plaintext mode.
  `deliver_to(imap)` makes an SmtpServer drop what it receives into the IMAP inboxes.
- `tls_mail_servers(users, certs)`: an SmtpServer and ImapServers over TLS, as a receiving
  test's module fixture wants them.
- `HostileServer`: silent, garbage, endless line, closes during the TLS handshake.
- `LineServer`: a scripted line-based server (e.g. an IMAP server advertising LOGINDISABLED).
- `closed_port()`: a port nothing listens on.

Every server runs its own event loop in a background thread, so it works from sync and async
tests alike and keeps answering while the test's loop is blocked in a sync client. Use them as
`with` / `async with` context managers, or call start() and stop(). stop() aborts open
connections and cancels handler tasks, so no transport or task outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import ssl
import threading
import time
import uuid
from argparse import Namespace
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from proxyprotocol.sock import SocketInfo
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Identity, Login
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxSet
from pymap.concurrent import Subsystem
from pymap.config import BackendCapability
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.user import Passwords, UserMetadata
from pysasl.creds.server import ServerCredentials
from pysasl.hashing import Cleartext

from mail.tls import fingerprint_sha256
from tests.support.waiting import loop_turn, wait_until_sync

HOST = "127.0.0.1"
START_TIMEOUT = 5.0

T = TypeVar("T")


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class MailCerts:
    """Server TLS contexts and what a client needs to trust (or pin) them."""

    ca_file: str  # PEM of the test CA: pass as ProbeSettings.ca_file
    server_context: ssl.SSLContext  # leaf for localhost and 127.0.0.1, signed by the test CA
    fingerprint: str
    untrusted_context: ssl.SSLContext  # same names, signed by a CA the client never sees
    untrusted_fingerprint: str
    localhost_only_context: ssl.SSLContext  # trusted, but valid for "localhost" only
    expired_context: ssl.SSLContext  # trusted CA, expired yesterday
    expired_fingerprint: str
    ca: trustme.CA  # issues certificates for servers run outside Python (Dovecot)


def _server_context(leaf: trustme.LeafCert) -> tuple[ssl.SSLContext, str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return ctx, fingerprint_sha256(der)


def make_certs(directory: Path) -> MailCerts:
    ca = trustme.CA()
    stranger = trustme.CA()  # "self-signed" from the client's view: its root is unknown
    ca_file = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trusted, fp = _server_context(ca.issue_cert("localhost", HOST))
    untrusted, untrusted_fp = _server_context(stranger.issue_cert("localhost", HOST))
    localhost_only, _ = _server_context(ca.issue_cert("localhost"))
    now = datetime.now(UTC)
    expired, expired_fp = _server_context(
        ca.issue_cert(
            "localhost",
            HOST,
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        )
    )
    return MailCerts(
        ca_file=str(ca_file),
        server_context=trusted,
        fingerprint=fp,
        untrusted_context=untrusted,
        untrusted_fingerprint=untrusted_fp,
        localhost_only_context=localhost_only,
        expired_context=expired,
        expired_fingerprint=expired_fp,
        ca=ca,
    )


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- background loop plumbing -------------------------------------------------------------


class BackgroundServer:
    """A server running in its own event loop thread. Subclasses implement _start/_stop."""

    host: str = HOST
    port: int = 0

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        """Stop listening and close open connections; leftover tasks are cancelled after."""

    def call(self, coro: Coroutine[Any, Any, T], within: float = START_TIMEOUT) -> T:
        """Run a coroutine on the server's loop and wait for its result (from any thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("server not started")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(within)

    def start(self) -> Self:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("server loop did not start")
        try:
            self.call(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.call(self._stop())
        finally:
            self.call(_cancel_other_tasks())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)
            self._loop = None
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _cancel_other_tasks() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class StreamServer(BackgroundServer):
    """asyncio.start_server with connection tracking, so stop() leaves nothing open."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or broke TLS: normal for probe tests
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await loop_turn()


# --- SMTP ---------------------------------------------------------------------------------


class SmtpMode(StrEnum):
    STARTTLS = "STARTTLS"  # plaintext port, STARTTLS required before AUTH (submission, 587)
    TLS = "TLS"  # implicit TLS (465)
    PLAIN = "PLAIN"  # no TLS at all, AUTH offered in the clear
    PLAIN_NO_AUTH = "PLAIN_NO_AUTH"  # no TLS and no AUTH (an MX on port 25)


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str | None
    rcpt_tos: list[str]
    data: bytes
    login: str | None


class SmtpHandler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._server.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        cap = self._server.max_messages_per_connection
        if cap is not None and getattr(session, "delivered", 0) >= cap:
            # As servers that cap messages per connection answer: 421, then hang up.
            asyncio.get_running_loop().call_soon(smtp.transport.close)  # type: ignore[union-attr]
            return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_QUIT(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        self._server.quits += 1
        return "221 Bye"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self._server.data_replies:  # refused (not delivered) with the next queued reply
            return self._server.data_replies.pop(0)
        if self._server.data_reply is not None:
            return self._server.data_reply
        content = envelope.original_content or b""
        login = session.auth_data if isinstance(session.auth_data, str) else None
        message = ReceivedMessage(envelope.mail_from, list(envelope.rcpt_tos), content, login)
        self._server.messages.append(message)
        session.delivered = getattr(session, "delivered", 0) + 1  # type: ignore[attr-defined]
        if self._server.on_message is not None:
            self._server.on_message(message)
        if self._server.vanish_after_data > 0:  # stored, and the reply never leaves
            self._server.vanish_after_data -= 1
            if smtp.transport is not None:
                smtp.transport.abort()  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


class _QuietSession(Session):
    """aiosmtpd sets the deprecated login_data on every login and logs a warning each time."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _SMTP(SMTP):
    def _create_session(self) -> Session:
        return _QuietSession(self.loop)


class SmtpServer(BackgroundServer):
    def __init__(
        self,
        mode: SmtpMode,
        users: Mapping[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        size_limit: int = 10 * 1024 * 1024,
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        super().__init__()
        if mode in (SmtpMode.STARTTLS, SmtpMode.TLS) and ssl_context is None:
            raise ValueError(f"{mode} needs an ssl_context")
        self.mode = mode
        self.users = dict(users)
        self.ssl_context = ssl_context
        self.size_limit = size_limit
        # Called in the server's thread for each message; may block briefly (deliver_to).
        self.on_message = on_message
        self.messages: list[ReceivedMessage] = []
        # Scripted refusals: a recipient's reply to RCPT ("550 5.1.1 No such user"), the
        # reply to every DATA instead of accepting the message ("451 4.3.0 Try later"), and
        # replies to the next DATA commands only, used up one each (then data_reply, if set).
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_replies: list[str] = []
        # The next N messages are stored and then the connection is cut before the reply to
        # DATA: the server has the message, the client never hears so (RFC 1047).
        self.vanish_after_data = 0
        self.auth_attempts = 0
        # (username, wall-clock time) of each login attempt, for spacing tests.
        self.logins: list[tuple[str, float]] = []
        self.connections = 0  # accepted so far
        self.quits = 0  # QUIT commands answered
        # Messages one connection may carry; MAIL beyond it gets 421 and the connection closes.
        self.max_messages_per_connection: int | None = None
        # AUTH mechanisms not to offer ("PLAIN", "LOGIN", ...).
        self.excluded_mechanisms: list[str] = []
        self._server: asyncio.Server | None = None
        self._protocols: set[SMTP] = set()

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            self.logins.append((login, time.time()))
            password = data.password.decode("utf-8", "replace")
            if login in self.users and self.users[login] == password:
                return AuthResult(success=True, auth_data=login)
        # handled=False: aiosmtpd then sends 535; handled=True would send nothing at all.
        return AuthResult(success=False, handled=False)

    def handler(self) -> Any:
        """aiosmtpd's handler for one connection; its ``auth_<NAME>`` methods add mechanisms
        (tests.support.oauth_mail adds XOAUTH2 and OAUTHBEARER)."""
        return SmtpHandler(self)

    def _make_protocol(self) -> SMTP:
        tls = self.mode is SmtpMode.STARTTLS
        protocol = _SMTP(
            self.handler(),
            hostname="localhost",  # default is socket.getfqdn(): a DNS lookup per connection
            data_size_limit=self.size_limit,
            tls_context=self.ssl_context if tls else None,
            require_starttls=tls,
            # Implicit TLS is invisible to aiosmtpd's check, so it must not demand STARTTLS.
            auth_require_tls=self.mode in (SmtpMode.STARTTLS, SmtpMode.PLAIN_NO_AUTH),
            authenticator=self._authenticate,
            auth_exclude_mechanism=self.excluded_mechanisms,
            timeout=30,
        )
        self._protocols.add(protocol)
        self.connections += 1
        return protocol

    def drop_connections(self) -> None:
        """Hang up every open connection, as a server does with idle ones (thread-safe)."""

        async def drop() -> None:
            for protocol in self._protocols:
                if protocol.transport is not None and not protocol.transport.is_closing():
                    protocol.transport.close()

        self.call(drop())

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        implicit = self.ssl_context if self.mode is SmtpMode.TLS else None
        self._server = await loop.create_server(self._make_protocol, HOST, 0, ssl=implicit)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for protocol in self._protocols:
            for transport in (protocol.transport, protocol._original_transport):
                if transport is not None and not transport.is_closing():
                    transport.abort()  # type: ignore[attr-defined]
        await loop_turn()
        self._protocols.clear()

    def wait_for_messages(self, count: int) -> list[ReceivedMessage]:
        wait_until_sync(
            lambda: len(self.messages) >= count,
            f"{count} messages (got {len(self.messages)})",
            poll=0.01,
        )
        return list(self.messages)


# --- IMAP ---------------------------------------------------------------------------------


class ImapMode(StrEnum):
    TLS = "TLS"  # implicit TLS (993)
    STARTTLS = "STARTTLS"  # plaintext port offering STARTTLS (143)
    PLAIN = "PLAIN"  # no TLS offered at all


class _Utf8Cleartext(Cleartext):
    """Cleartext storage whose compare also works for non-ASCII passwords."""

    def copy(self, **kwargs: Any) -> _Utf8Cleartext:
        return self

    def verify(self, secret: str, hash: str) -> bool:
        return hmac.compare_digest(secret.encode(), hash.encode())


class _PymapConfig(DictConfig):
    idle = True  # pymap's own disable_idle is read nowhere

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=self.idle, object_id=True, multi_append=True)

    @property
    def greeting(self) -> bytes:
        # The stock greeting calls socket.getfqdn() per connection, a DNS lookup.
        return b"Server ready localhost"


class _CountingLogin(Login):
    """Counts login attempts, so tests can prove no credential was sent."""

    def __init__(self, config: _PymapConfig, server: ImapServer) -> None:
        super().__init__(config)
        self._server = server

    async def authenticate(self, credentials: ServerCredentials) -> Identity:
        self._server.auth_attempts += 1
        self._server.logins.append((credentials.authcid, time.time()))
        return await super().authenticate(credentials)


class _CommandReader:
    """The connection's reader, as pymap reads it, with ``ImapServer.arrive_before`` consulted
    before each command line reaches pymap, its watching session counted (one that opened a
    mailbox) and a command ``ImapServer.unanswered`` picks held back until the client hangs up."""

    def __init__(self, reader: asyncio.StreamReader, server: ImapServer) -> None:
        self._reader = reader
        self._server = server
        self._user: str | None = None
        self.watching: str | None = None  # the user, once this session opened a mailbox

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        words = line.split()
        if len(words) >= 3 and words[1].upper() == b"LOGIN":
            self._user = words[2].strip(b'"').decode()
        opens = len(words) >= 2 and words[1].upper() in (b"EXAMINE", b"SELECT")
        if opens and self._user is not None and self.watching is None:
            self.watching = self._user
            self._server._watch_opened(self._user)
        arrive = self._server.arrive_before
        if self._user is not None and arrive is not None:
            raw = arrive(self._user, line)
            if raw is not None:  # mail arriving this instant, before pymap sees the command
                await self._server._append(self._user, raw)
        unanswered = self._server.unanswered
        if self._user is not None and unanswered is not None and unanswered(self._user, line):
            # A server that never answers this: read on (and drop) until the client hangs up.
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while await self._reader.read(4096):
                    pass
            self.closed()
            return b""
        if not line:
            self.closed()
        return line

    def closed(self) -> None:
        """The client hung up (or the session ended): its watching session is over."""
        if self.watching is not None:
            self._server._watch_closed(self.watching)
            self.watching = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class ImapServer(StreamServer):
    """pymap's dict backend. Note: pymap lets loopback clients LOGIN before STARTTLS."""

    def __init__(
        self,
        mode: ImapMode,
        users: Mapping[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle: bool = True,
    ) -> None:
        if mode is not ImapMode.PLAIN and ssl_context is None:
            raise ValueError(f"{mode} needs an ssl_context")
        super().__init__(ssl_context=ssl_context if mode is ImapMode.TLS else None)
        self.mode = mode
        self.idle = idle  # False: no IDLE capability (clients must poll)
        self.open_sessions = 0  # connections being served now
        self.users = dict(users)
        self._tls_context = ssl_context
        self._config: _PymapConfig | None = None
        self._imap: IMAPServer | None = None
        self.auth_attempts = 0
        # (username, wall-clock time) of each login attempt, for spacing tests.
        self.logins: list[tuple[str, float]] = []
        # (user, command line) -> a raw message to deliver to the user just before pymap reads
        # that command, or None: mail arriving at an exact moment of a client's session.
        self.arrive_before: Callable[[str, bytes], bytes | None] | None = None
        # (user, command line) -> True: that command is never answered (a server gone quiet
        # mid-session); the session stays open until the client hangs up.
        self.unanswered: Callable[[str, bytes], bool] | None = None
        # Sessions per user that opened a mailbox (a watcher) open now, and the most at once.
        self.mailbox_sessions: Counter[str] = Counter()
        self.most_mailbox_sessions: Counter[str] = Counter()

    async def _start(self) -> None:
        args = Namespace(passlib_cfg=None, proxy_protocol=None, inherited_sockets=None)
        starttls = self.mode is ImapMode.STARTTLS
        config = _PymapConfig(
            args,
            host=HOST,
            port=0,
            demo_data=False,
            demo_user="demouser",
            demo_password="",
            ssl_context=self._tls_context if starttls else None,
            tls_enabled=starttls,
            reject_dnsbl=False,
            hash_context=_Utf8Cleartext(),  # the default PBKDF2 costs ~0.3 s per login
            cpu_subsystem=Subsystem.for_asyncio(),  # no thread pool to leak
            invalid_user_sleep=0.0,
        )
        config.idle = self.idle
        config.apply_context()
        login = _CountingLogin(config, self)
        passwords = Passwords(config)
        for name, password in self.users.items():
            hashed = await passwords.hash_password(password)
            await Identity(name, login, None, frozenset()).set(
                UserMetadata(config, name, password=hashed)
            )
        self._config = config
        self._imap = IMAPServer(login, config)
        await super()._start()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._imap is not None
        info = SocketInfo.get(writer, None, unique_id=uuid.uuid4().bytes)
        self.open_sessions += 1
        commands = _CommandReader(reader, self)
        try:
            await self._imap(commands, writer, info)  # type: ignore[arg-type]
        finally:
            commands.closed()
            self.open_sessions -= 1

    def _watch_opened(self, user: str) -> None:
        self.mailbox_sessions[user] += 1
        self.most_mailbox_sessions[user] = max(
            self.most_mailbox_sessions[user], self.mailbox_sessions[user]
        )

    def _watch_closed(self, user: str) -> None:
        self.mailbox_sessions[user] -= 1

    async def _mailboxes(self, user: str) -> MailboxSet:
        assert self._config is not None
        cache = self._config.set_cache
        if user not in cache:  # the same cache pymap fills on a user's first login
            cache[user] = (MailboxSet(), FilterSet())
        return cache[user][0]

    async def _append(self, user: str, data: bytes) -> None:
        inbox = await (await self._mailboxes(user)).get_mailbox("INBOX")
        await inbox.append(AppendMessage(data, datetime.now(UTC), frozenset()), recent=True)

    async def _count(self, user: str) -> int:
        inbox = await (await self._mailboxes(user)).get_mailbox("INBOX")
        return len([message async for message in inbox.messages()])

    def deliver(self, user: str, data: bytes) -> None:
        """Put a raw message into a user's INBOX (thread-safe)."""
        self.call(self._append(user, data))

    def deliver_all(self, user: str, messages: list[bytes]) -> None:
        """Put raw messages into a user's INBOX one after another in one go on the server's
        loop, as a burst arrives (thread-safe)."""

        async def append_all() -> None:
            for data in messages:
                await self._append(user, data)

        self.call(append_all())

    def message_count(self, user: str) -> int:
        return self.call(self._count(user))


def deliver_to(
    imap: ImapServer, route: Callable[[str], str | None] | None = None
) -> Callable[[ReceivedMessage], None]:
    """An SmtpServer.on_message that stores each message in the recipients' IMAP inboxes.

    `route` maps a recipient address to an IMAP user (default: the address itself, when it
    is a known user; unknown recipients are dropped).
    """

    def default_route(address: str) -> str | None:
        return address if address in imap.users else None

    pick = route or default_route

    def on_message(message: ReceivedMessage) -> None:
        for rcpt in message.rcpt_tos:
            user = pick(rcpt)
            if user is not None:
                imap.deliver(user, message.data)

    return on_message


@contextlib.contextmanager
def tls_mail_servers(
    users: Mapping[str, str], certs: MailCerts, *imap_modes: ImapMode
) -> Iterator[dict[str, Any]]:
    """A receiving test's mail servers for ``users``, with the test CA's certificate: an
    aiosmtpd over implicit TLS (``"smtp"``), then a pymap for each of ``imap_modes`` (TLS
    when none is named), each under its mode's name (``"TLS"``, ``"STARTTLS"``)."""
    ctx = certs.server_context
    with contextlib.ExitStack() as stack:
        smtp = stack.enter_context(SmtpServer(SmtpMode.TLS, users, ssl_context=ctx))
        servers: dict[str, Any] = {"smtp": smtp}
        for mode in imap_modes or (ImapMode.TLS,):
            servers[mode.value] = stack.enter_context(ImapServer(mode, users, ssl_context=ctx))
        yield servers


# --- scripted and hostile servers ---------------------------------------------------------


class LineServer(StreamServer):
    """Sends `greeting`, then answers each received line with respond(line); None closes."""

    def __init__(
        self,
        greeting: bytes,
        respond: Callable[[bytes], Sequence[bytes] | None],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context)
        self.greeting = greeting
        self.respond = respond
        self.received: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        await writer.drain()
        while line := await reader.readline():
            self.received.append(line)
            replies = self.respond(line)
            if replies is None:
                return
            for reply in replies:
                writer.write(reply)
            await writer.drain()


def imap_script(capabilities: str) -> Callable[[bytes], Sequence[bytes] | None]:
    """Replies of a minimal IMAP server that only knows CAPABILITY and LOGOUT."""

    def respond(line: bytes) -> Sequence[bytes] | None:
        tag, _, rest = line.strip().partition(b" ")
        command = rest.split(b" ", 1)[0].upper()
        if command == b"CAPABILITY":
            return [b"* CAPABILITY " + capabilities.encode() + b"\r\n", tag + b" OK done\r\n"]
        if command == b"LOGOUT":
            return None
        return [tag + b" NO not here\r\n"]

    return respond


class Behaviour(StrEnum):
    SILENT = "SILENT"  # accepts, never sends a byte
    GARBAGE = "GARBAGE"  # binary junk with line breaks, then silence
    ENDLESS_LINE = "ENDLESS_LINE"  # one line that never ends (bounded at 64 MiB)
    CLOSE_MID_TLS = "CLOSE_MID_TLS"  # reads the TLS ClientHello, then hangs up


ENDLESS_LINE_CAP = 64 * 1024 * 1024


class HostileServer(StreamServer):
    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.bytes_sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.behaviour is Behaviour.GARBAGE:
            writer.write(b"\x00\xff\xfe garbage \x1b[31m\r\n\x16\x03\x01 ??? \r\n")
            await writer.drain()
        elif self.behaviour is Behaviour.ENDLESS_LINE:
            chunk = b"220 " + b"A" * 65532
            # Bounded so a client that never hangs up cannot keep this loop going forever.
            while self.bytes_sent < ENDLESS_LINE_CAP and not writer.is_closing():
                writer.write(chunk)
                self.bytes_sent += len(chunk)
                await writer.drain()
            return
        elif self.behaviour is Behaviour.CLOSE_MID_TLS:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), 5)
            return
        # SILENT, and GARBAGE after its junk: hold the connection until the client leaves.
        await reader.read()
