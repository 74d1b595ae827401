"""The few IMAP4rev1 commands a probe needs, over asyncio streams.

Why not aioimaplib: the probe must connect to the guard-checked IP while verifying TLS for
the hostname, upgrade with STARTTLS, bound line length and memory against hostile servers,
and fail fast on a garbage greeting. aioimaplib 2.0.3 connects by hostname only, has no
STARTTLS, buffers an unterminated line without limit and, on a bad greeting, fails in a
background task and leaves the caller waiting for its timeout. Each of those would need
patching its internals, so the probe speaks the handful of commands itself (about 150
lines); mailbox sync can still use aioimaplib where its limits don't matter.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field

LINE_LIMIT = 64 * 1024  # longest response line accepted (also bounds the read buffer)
MAX_LITERAL = 1024 * 1024
MAX_UNTAGGED = 10_000  # untagged lines kept per command

_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})\+?\}$")
_CODE = re.compile(rb"^\[([^\]]*)\]")


class ImapProtocolError(Exception):
    """The peer broke the protocol; the message is safe to show (no server secrets echoed)."""


class ImapClosed(ImapProtocolError):
    """The peer closed the connection."""


@dataclass(frozen=True, slots=True)
class ImapLiteral:
    """An argument sent as a synchronising literal: any bytes, including non-ASCII."""

    data: bytes


Arg = bytes | ImapLiteral


@dataclass(slots=True)
class Tagged:
    status: str  # OK, NO or BAD
    text: bytes
    untagged: list[bytes] = field(default_factory=list)

    @property
    def code(self) -> bytes | None:
        """The response code in brackets, e.g. b"CAPABILITY IMAP4rev1 IDLE"."""
        match = _CODE.match(self.text)
        return match.group(1) if match else None


def astring(value: str) -> Arg:
    """A quoted string when IMAP allows one, otherwise a literal (non-ASCII, CR, LF)."""
    raw = value.encode("utf-8")
    if all(0x20 <= b < 0x7F for b in raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return ImapLiteral(raw)


def parse_capabilities(line: bytes) -> list[str]:
    """Capability atoms from "CAPABILITY a b" or a response code "[CAPABILITY a b] text"."""
    text = line.decode("ascii", "replace")
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    words = text.split()
    if not words or words[0].upper() != "CAPABILITY":
        return []
    return [w.upper() for w in words[1:] if w.isprintable()]


class ImapWire:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._tag = 0

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self._writer

    async def _read_raw_line(self) -> bytes:
        try:
            line = await asyncio.wait_for(self._reader.readuntil(b"\n"), self._timeout)
        except asyncio.LimitOverrunError:
            raise ImapProtocolError("The server sent a line longer than 64 KiB.") from None
        except asyncio.IncompleteReadError as exc:
            if len(exc.partial) >= LINE_LIMIT:
                raise ImapProtocolError("The server sent a line longer than 64 KiB.") from None
            raise ImapClosed("The server closed the connection.") from None
        return line.rstrip(b"\r\n")

    async def read_line(self) -> bytes:
        """One response line with any literals inlined (bounded by MAX_LITERAL each)."""
        line = await self._read_raw_line()
        total = len(line)
        while match := _LITERAL_AT_END.search(line):
            size = int(match.group(1))
            total += size
            if size > MAX_LITERAL or total > MAX_LITERAL:
                raise ImapProtocolError("The server sent an oversized literal.")
            try:
                data = await asyncio.wait_for(self._reader.readexactly(size), self._timeout)
            except asyncio.IncompleteReadError:
                raise ImapClosed("The server closed the connection.") from None
            line = line + b"\r\n" + data + await self._read_raw_line()
        return line

    async def read_greeting(self) -> tuple[str, bytes]:
        """("OK" | "PREAUTH" | "BYE", line); anything else is not an IMAP server."""
        line = await self.read_line()
        for status in ("OK", "PREAUTH", "BYE"):
            if line.upper().startswith(f"* {status}".encode()):
                return status, line
        raise ImapProtocolError("The server's greeting is not IMAP.")

    def _next_tag(self) -> bytes:
        self._tag += 1
        return b"P%d" % self._tag

    async def command(self, name: str, *args: Arg) -> Tagged:
        """Send a command and collect its untagged lines until the tagged completion."""
        tag = self._next_tag()
        untagged: list[bytes] = []
        pending = tag + b" " + name.encode("ascii")
        for arg in args:
            if isinstance(arg, ImapLiteral):
                self._writer.write(pending + b" {%d}\r\n" % len(arg.data))
                early = await self._await_continuation(tag, untagged)
                if early is not None:
                    return early  # the server refused the command before the literal
                pending = arg.data
            else:
                pending += b" " + arg
        self._writer.write(pending + b"\r\n")
        await asyncio.wait_for(self._writer.drain(), self._timeout)
        while True:
            line = await self.read_line()
            done = self._tagged(tag, line)
            if done is not None:
                done.untagged = untagged
                return done
            self._collect(line, untagged)

    async def _await_continuation(self, tag: bytes, untagged: list[bytes]) -> Tagged | None:
        await asyncio.wait_for(self._writer.drain(), self._timeout)
        while True:
            line = await self.read_line()
            if line.startswith(b"+"):
                return None
            done = self._tagged(tag, line)
            if done is not None:
                done.untagged = untagged
                return done
            self._collect(line, untagged)

    @staticmethod
    def _tagged(tag: bytes, line: bytes) -> Tagged | None:
        if not line.startswith(tag + b" "):
            return None
        status, _, text = line[len(tag) + 1 :].partition(b" ")
        status_text = status.decode("ascii", "replace").upper()
        if status_text not in ("OK", "NO", "BAD"):
            raise ImapProtocolError("The server sent a malformed command completion.")
        return Tagged(status_text, text)

    @staticmethod
    def _collect(line: bytes, untagged: list[bytes]) -> None:
        if line.startswith(b"* "):
            if len(untagged) >= MAX_UNTAGGED:
                raise ImapProtocolError("The server sent too many responses.")
            untagged.append(line[2:])
        elif not line.startswith(b"+"):
            raise ImapProtocolError("The server sent a line that is not an IMAP response.")

    async def authenticate(
        self, mechanism: str, response: bytes, error_ack: bytes, *, sasl_ir: bool
    ) -> tuple[Tagged, bytes | None]:
        """AUTHENTICATE with one client response: inline with SASL-IR (RFC 4959), else after
        the server's first "+". A "+" after that is the server's error challenge: it gets
        ``error_ack`` and comes back beside the completion (any further one, a cancel)."""
        tag = self._next_tag()
        start = tag + b" AUTHENTICATE " + mechanism.encode("ascii")
        pending = [] if sasl_ir else [response]
        self._writer.write(start + (b" " + response if sasl_ir else b"") + b"\r\n")
        await asyncio.wait_for(self._writer.drain(), self._timeout)
        untagged: list[bytes] = []
        challenge: bytes | None = None
        while True:
            line = await self.read_line()
            done = self._tagged(tag, line)
            if done is not None:
                done.untagged = untagged
                return done, challenge
            if not line.startswith(b"+"):
                self._collect(line, untagged)
                continue
            if pending:
                answer = pending.pop()
            elif challenge is None:
                challenge, answer = line[1:].strip(), error_ack
            else:
                answer = b"*"
            self._writer.write(answer + b"\r\n")
            await asyncio.wait_for(self._writer.drain(), self._timeout)

    async def capabilities(self) -> list[str]:
        reply = await self.command("CAPABILITY")
        for line in reply.untagged:
            caps = parse_capabilities(line)
            if caps:
                return caps
        return parse_capabilities(reply.text)

    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str, handshake_within: float
    ) -> Tagged:
        """Send STARTTLS; on OK upgrade the stream. Returns the reply (NO/BAD: not upgraded)."""
        reply = await self.command("STARTTLS")
        if reply.status != "OK":
            return reply
        # Bytes already buffered arrived in plaintext after the OK: an injection attempt
        # (RFC 3501 section 11.1); reading them after the upgrade would trust them.
        if getattr(self._reader, "_buffer", b""):
            raise ImapProtocolError("The server sent data after agreeing to STARTTLS.")
        await asyncio.wait_for(
            self._writer.start_tls(
                context, server_hostname=server_hostname, ssl_handshake_timeout=handshake_within
            ),
            handshake_within,
        )
        return reply

    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self._writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None
