"""The IMAP side of a round trip: log in as the IMAP probe does, find the test message in
the INBOX by its token, and delete only it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

from mail.endpoint import Endpoint, ProbeSettings
from mail.failures import ProbeFailure

# The IMAP probe's steps, reused so the round trip logs in exactly as the probe does.
# (imap_probe.py exposes no session helper; it is outside this module's remit to add one.)
from mail.imap_probe import (
    _authenticate,
    _not_imap,
    _open,
    _record_capabilities,
)
from mail.imap_wire import Arg, ImapProtocolError, ImapWire, astring
from mail.message import TEST_HEADER
from mail.presets import Security
from mail.probe_runner import ProbeFacts, close_writer, resolve_checked, server_text
from mail.results import ProbeCode
from mail.tls import negotiate

_LOGOUT_TIMEOUT = 2.0
_SEARCH_RESPONSE = re.compile(rb"^SEARCH\b(.*)$", re.IGNORECASE)
_FETCH_RESPONSE = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d{1,10})\+?\}\r\n")
# A search for a unique token finds one message; more means the server ignored the criteria.
_MAX_MATCHES = 20


class TestMailbox:
    """The INBOX of ``endpoint``, where the message carrying ``token`` is looked for."""

    def __init__(self, endpoint: Endpoint, settings: ProbeSettings, token: str) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.token = token
        self.wire: ImapWire | None = None
        self.facts = ProbeFacts()

    async def login(self) -> None:
        """Log in as the IMAP probe does, then SELECT INBOX (read-write, to delete later)."""
        endpoint, settings, facts = self.endpoint, self.settings, self.facts
        facts.deadline = asyncio.get_running_loop().time() + settings.overall_timeout
        target = await resolve_checked(endpoint, settings)

        async def open_with(context: ssl.SSLContext | None) -> ImapWire:
            return await _open(endpoint, settings, target, facts, context)

        async def close(wire: ImapWire) -> None:
            await close_writer(wire.writer)

        try:
            if endpoint.security is Security.NONE:
                wire = await open_with(None)
            else:
                wire, facts.tls = await negotiate(
                    open_with,
                    lambda w: w.ssl_object(),
                    close,
                    ca_file=settings.ca_file,
                    pin=endpoint.tls_certificate_sha256,
                )
            self.wire = wire  # closed by close() from here on, whatever happens
            # Asked again after STARTTLS: capabilities from before TLS may have been forged.
            _record_capabilities(facts, await wire.capabilities())
            await _authenticate(wire, endpoint, facts)
        except ImapProtocolError as exc:
            raise _not_imap(exc) from None
        reply = await wire.command("SELECT", b"INBOX")
        if reply.status != "OK":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server would not open the INBOX: {reply.status} {server_text(reply.text)}",
            )

    async def noop(self) -> None:
        """Ask the server to report new messages (RFC 3501 6.1.2)."""
        await self._command("NOOP")

    async def delete(self, found: list[int]) -> bool:
        """Flag the messages ``found`` \\Deleted and expunge only them; True when gone."""
        uids = b",".join(b"%d" % uid for uid in found)
        await self._command("UID STORE", uids, b"+FLAGS.SILENT", b"(\\Deleted)")
        if "UIDPLUS" in self.facts.capabilities:
            await self._command("UID EXPUNGE", uids)
        else:
            # A plain EXPUNGE removes every \Deleted message: run it only when no other
            # message is flagged, so a user's own deleted-but-kept mail survives.
            flagged = await self._search(b"DELETED")
            if not set(flagged) <= set(found):
                return False
            await self._command("EXPUNGE")
        return not await self.find()

    async def _command(self, name: str, *args: Arg) -> None:
        assert self.wire is not None
        try:
            reply = await self.wire.command(name, *args)
        except ImapProtocolError as exc:
            raise ProbeFailure(ProbeCode.PROTOCOL_ERROR, str(exc)) from None
        if reply.status != "OK":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server refused {name}: {reply.status} {server_text(reply.text)}",
            )

    async def find(self) -> list[int]:
        """UIDs of INBOX messages carrying our token, each confirmed by reading its header.

        The check keeps a server that ignores or misreads the search criteria (and answers
        with every message) from getting the user's own mail deleted.
        """
        assert self.wire is not None
        matches = await self._search(b"HEADER", astring(TEST_HEADER), astring(self.token))
        if not matches:
            return []
        uids = b",".join(b"%d" % uid for uid in sorted(matches)[-_MAX_MATCHES:])
        fields = b"(UID BODY.PEEK[HEADER.FIELDS (" + TEST_HEADER.encode() + b")])"
        try:
            reply = await self.wire.command("UID FETCH", uids, fields)
        except ImapProtocolError as exc:
            raise ProbeFailure(ProbeCode.PROTOCOL_ERROR, str(exc)) from None
        if reply.status != "OK":
            return []
        token = self.token.encode()
        confirmed: list[int] = []
        for line in reply.untagged:
            if not _FETCH_RESPONSE.match(line):
                continue
            text, literals = _split_literals(line)
            uid = _FETCH_UID.search(text)
            if uid and int(uid.group(1)) in matches and token in b"".join(literals) + text:
                confirmed.append(int(uid.group(1)))
        return sorted(set(confirmed))

    async def _search(self, *criteria: Arg) -> list[int]:
        assert self.wire is not None
        try:
            reply = await self.wire.command("UID SEARCH", *criteria)
        except ImapProtocolError as exc:
            raise ProbeFailure(ProbeCode.PROTOCOL_ERROR, str(exc)) from None
        if reply.status != "OK":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server could not search the INBOX: {reply.status} {server_text(reply.text)}",
            )
        uids: list[int] = []
        for line in reply.untagged:
            match = _SEARCH_RESPONSE.match(line)
            if match:
                uids.extend(int(word) for word in match.group(1).split() if word.isdigit())
        return uids

    async def close(self) -> None:
        wire, self.wire = self.wire, None
        if wire is None:
            return
        within = min(_LOGOUT_TIMEOUT, self.settings.connect_timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(wire.command("LOGOUT"), within)
        await close_writer(wire.writer)


def _split_literals(line: bytes) -> tuple[bytes, list[bytes]]:
    """A response line (literals inlined by ImapWire) as its text outside literals, and
    the literals: a header's content must not pass for response syntax like "UID 3"."""
    text: list[bytes] = []
    literals: list[bytes] = []
    position = 0
    while match := _LITERAL.search(line, position):
        end = match.end() + int(match.group(1))
        text.append(line[position : match.start()])
        literals.append(line[match.end() : end])
        position = end
    text.append(line[position:])
    return b"".join(text), literals
