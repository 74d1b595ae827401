"""Round trip: send a real test message over SMTP, find it over IMAP, then delete it.

Both sides connect exactly as the probes do (address guard, TLS verified or pinned, AUTH /
LOGIN), through the probes' own helpers, and their failures carry the probes' codes, fields
and hints. When the message is to be checked (sent to the sender's own address), the IMAP
login comes first: a broken IMAP login then costs no stray message in the user's mailbox.

The message is found by a unique `X-Inboxd-Test` header. It is a random token, not a
secret, like the Message-ID built from it; passwords never reach a result (the probes'
scrubbing covers both endpoints' passwords here).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)

from mail.endpoint import Endpoint, ProbeSettings
from mail.failures import ProbeFailure

# The IMAP probe's steps, reused so the round trip logs in exactly as the probe does.
# (imap_probe.py exposes no session helper; it is outside this module's remit to add one.)
from mail.imap_probe import (
    _login,
    _not_imap,
    _open,
    _plaintext_refused,
    _record_capabilities,
)
from mail.imap_wire import Arg, ImapProtocolError, ImapWire, astring
from mail.message import (
    SUBJECT,
    TEST_HEADER,
    InvalidAddress,
    TestMessage,
    UnsafeHeader,
    build_message,
    message_id,
)
from mail.presets import Security
from mail.probe_runner import (
    ProbeFacts,
    attempt,
    close_writer,
    failure_result,
    final_scrub,
    resolve_checked,
    secrets_scope,
    server_text,
)
from mail.results import ProbeCode, Protocol
from mail.smtp_probe import close_smtp_session, open_smtp_session
from mail.tls import negotiate

__all__ = ["SUBJECT", "TEST_HEADER", "RoundTripCode", "RoundTripResult", "run_round_trip"]

_LOGOUT_TIMEOUT = 2.0
_SEARCH_RESPONSE = re.compile(rb"^SEARCH\b(.*)$", re.IGNORECASE)
_FETCH_RESPONSE = re.compile(rb"^\d+ FETCH \(", re.IGNORECASE)
_FETCH_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d{1,10})\+?\}\r\n")
# A search for a unique token finds one message; more means the server ignored the criteria.
_MAX_MATCHES = 20


class RoundTripCode(StrEnum):
    """Codes of the round trip's own outcomes; SMTP/IMAP failures use ProbeCode values."""

    NOT_RECEIVED = "NOT_RECEIVED"
    REJECTED_RECIPIENT = "REJECTED_RECIPIENT"  # RCPT TO refused (field "to")
    REJECTED_SENDER = "REJECTED_SENDER"  # MAIL FROM refused (field "email")
    REJECTED_MESSAGE = "REJECTED_MESSAGE"  # DATA refused (spam filter, policy, size)
    INVALID_ADDRESS = "INVALID_ADDRESS"  # from/to not an address we can send with
    INVALID_HEADER = "INVALID_HEADER"  # headers would not go out as written ("displayName")


@dataclass(slots=True)
class RoundTripResult:
    ok: bool  # sent and (when checked) received
    sent: bool
    received: bool | None  # None when the message went to another address (not checked)
    deleted: bool  # the test message was removed from the mailbox afterwards
    delay_ms: int | None  # from SMTP acceptance to it being found over IMAP
    message_id: str  # the Message-ID we generated (no secret in it)
    code: str  # "OK", a ProbeCode value, or a RoundTripCode value
    message: str
    hint: str | None
    field: str | None  # e.g. "smtp.password", "imap.host", "to"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sent": self.sent,
            "received": self.received,
            "deleted": self.deleted,
            "delay_ms": self.delay_ms,
            "message_id": self.message_id,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "field": self.field,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundTripResult:
        received = data.get("received")
        delay_ms = data.get("delay_ms")
        return cls(
            ok=bool(data["ok"]),
            sent=bool(data.get("sent", False)),
            received=None if received is None else bool(received),
            deleted=bool(data.get("deleted", False)),
            delay_ms=None if delay_ms is None else int(delay_ms),
            message_id=str(data.get("message_id", "")),
            code=str(data["code"]),
            message=str(data.get("message", "")),
            hint=data.get("hint"),
            field=data.get("field"),
        )


async def run_round_trip(
    smtp: Endpoint,
    imap: Endpoint,
    *,
    from_address: str,
    to_address: str,
    smtp_settings: ProbeSettings,
    imap_settings: ProbeSettings,
    receive_timeout: float = 60.0,
    poll_interval: float = 2.0,
    provider: str | None = None,
    from_name: str | None = None,
) -> RoundTripResult:
    """Send a small test message through `smtp`; if it goes to `from_address` itself, wait
    for it in `imap`'s INBOX and delete it.

    Never raises for a server's behaviour or a malformed address (both become results);
    raises ValueError only for a non-positive `receive_timeout` or `poll_interval`.
    Every wait is bounded: each phase by its settings' timeouts, the wait for delivery by
    `receive_timeout`.
    """
    if not receive_timeout > 0 or not poll_interval > 0:
        raise ValueError("receive_timeout and poll_interval must be positive")
    token = secrets.token_hex(16)
    trip = _RoundTrip(
        smtp,
        imap,
        from_address=from_address,
        to_address=to_address,
        smtp_settings=smtp_settings,
        imap_settings=imap_settings,
        receive_timeout=receive_timeout,
        poll_interval=poll_interval,
        provider=provider,
        token=token,
        message_id=message_id(from_address, token),
    )
    with secrets_scope(smtp, imap) as forms:
        result = await trip.run(from_name)
    result.message = final_scrub(result.message, forms) or ""
    result.hint = final_scrub(result.hint, forms)
    return result


def _same_address(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


@dataclass(slots=True)
class _Refusal:
    """The SMTP server refused our envelope or message: the round trip's own codes."""

    code: RoundTripCode
    message: str
    hint: str | None
    field: str | None


class _RoundTrip:
    def __init__(
        self,
        smtp: Endpoint,
        imap: Endpoint,
        *,
        from_address: str,
        to_address: str,
        smtp_settings: ProbeSettings,
        imap_settings: ProbeSettings,
        receive_timeout: float,
        poll_interval: float,
        provider: str | None,
        token: str,
        message_id: str,
    ) -> None:
        self.smtp = smtp
        self.imap = imap
        self.from_address = from_address.strip()
        self.to_address = to_address.strip()
        self.smtp_settings = smtp_settings
        self.imap_settings = imap_settings
        self.receive_timeout = receive_timeout
        self.poll_interval = poll_interval
        self.provider = provider
        self.token = token
        self.message_id = message_id
        self.check = _same_address(from_address, to_address)

        self.wire: ImapWire | None = None
        self.imap_facts = ProbeFacts()
        self.sent = False
        self.accepted_at = 0.0  # time.monotonic() when SMTP accepted the message
        self.refusal: _Refusal | None = None
        self.found: list[int] = []
        self.found_at = 0.0
        self.deleted = False

    # --- outcome ------------------------------------------------------------------------

    def _result(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
    ) -> RoundTripResult:
        received: bool | None = bool(self.found) if self.check else None
        delay_ms = int((self.found_at - self.accepted_at) * 1000) if self.found else None
        return RoundTripResult(
            ok=self.sent and received is not False and code == ProbeCode.OK.value,
            sent=self.sent,
            received=received,
            deleted=self.deleted,
            delay_ms=delay_ms,
            message_id=self.message_id,
            code=code,
            message=message,
            hint=hint,
            field=field,
        )

    def _failed(self, protocol: Protocol, failure: ProbeFailure, prefix: str) -> RoundTripResult:
        probe = failure_result(protocol, failure, self.provider)
        return self._result(
            probe.code.value, f"{prefix}{probe.message}", hint=probe.hint, field=probe.field
        )

    # --- the trip -----------------------------------------------------------------------

    async def run(self, from_name: str | None) -> RoundTripResult:
        try:
            message = build_message(
                from_address=self.from_address,
                to_address=self.to_address,
                from_name=from_name,
                message_id=self.message_id,
                token=self.token,
            )
        except InvalidAddress as exc:
            return self._result(
                RoundTripCode.INVALID_ADDRESS.value,
                f"{exc.message} No message was sent.",
                field=exc.field,
            )
        except UnsafeHeader:
            return self._result(
                RoundTripCode.INVALID_HEADER.value,
                "The test message's headers would not go out as written (the display name "
                "holds a line break or another control character). No message was sent.",
                hint="Change the inbox's displayName to plain text.",
                field="displayName",
            )
        try:
            return await self._trip(message)
        finally:
            await self._close_imap()

    async def _trip(self, message: TestMessage) -> RoundTripResult:
        if self.check:
            failure = await attempt(self._imap_login, self.imap_settings.overall_timeout)
            if failure is not None:
                return self._failed("imap", failure, "IMAP: ")

        async def send() -> None:
            await self._send(message)

        failure = await attempt(send, self.smtp_settings.overall_timeout)
        if self.refusal is not None:
            r = self.refusal
            return self._result(r.code.value, r.message, hint=r.hint, field=r.field)
        if failure is not None and not self.sent:
            return self._failed("smtp", failure, "SMTP: ")

        where = f"{self.smtp.host}:{self.smtp.port}"
        if not self.check:
            return self._result(
                ProbeCode.OK.value,
                f"Sent the test message to {self.to_address} through {where}. It went to "
                "another address, so its arrival was not checked.",
            )

        # Each IMAP command waits at most connect_timeout; this caps the whole search.
        cap = self.receive_timeout + 3 * self.imap_settings.connect_timeout
        failure = await attempt(self._poll, cap)
        if failure is not None:
            return self._failed("imap", failure, "Sent, but checking for it over IMAP failed: ")
        if not self.found:
            return self._result(
                RoundTripCode.NOT_RECEIVED.value,
                f"Sent but not received within {self.receive_timeout:g} s.",
                hint=(
                    f"{where} accepted the message, but it did not show up in the IMAP INBOX "
                    f"of {self.imap.username}. Check that the IMAP account is the same mailbox "
                    f"as {self.from_address}; look in the spam or other folders, where a "
                    "filter may have put it; delivery may also just be slow: try again with "
                    "a longer timeout. If it arrives later, you may delete the message "
                    f'"{SUBJECT}".'
                ),
            )

        # The message arrived: a failed deletion is reported, not a failed round trip.
        await attempt(self._delete, self.imap_settings.overall_timeout)
        delay_ms = int((self.found_at - self.accepted_at) * 1000)
        text = f"Sent through {where} and received over IMAP after {delay_ms} ms"
        if self.deleted:
            return self._result(ProbeCode.OK.value, f"{text}; the test message was deleted.")
        return self._result(
            ProbeCode.OK.value,
            f"{text}, but the test message could not be deleted.",
            hint=f'You may delete the message "{SUBJECT}" from the INBOX yourself.',
        )

    # --- SMTP ---------------------------------------------------------------------------

    async def _send(self, message: TestMessage) -> None:
        settings = self.smtp_settings
        facts = ProbeFacts(deadline=asyncio.get_running_loop().time() + settings.overall_timeout)
        target = await resolve_checked(self.smtp, settings)
        client = await open_smtp_session(self.smtp, settings, target, facts)
        try:
            await self._transmit(client, message)
        finally:
            await close_smtp_session(client, settings, facts)

    async def _transmit(self, client: aiosmtplib.SMTP, message: TestMessage) -> None:
        options = ["SMTPUTF8"] if message.smtputf8 else []
        try:
            if message.smtputf8 and not client.supports_extension("smtputf8"):
                raise SMTPNotSupported("SMTPUTF8")
            # The checked bytes themselves: send_message() would serialize the message again.
            await client.sendmail(
                self.from_address, [self.to_address], message.data, mail_options=options
            )
        except SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused is not None else 550
            reply = server_text(refused.message) if refused is not None else ""
            self.refusal = _Refusal(
                RoundTripCode.REJECTED_RECIPIENT,
                f"The SMTP server refused the recipient {self.to_address}: {code} {reply}",
                _temporary_hint(code)
                or "Check the recipient address: the server may not know it, or may only "
                "accept some recipient domains from this account.",
                "to",
            )
            return
        except SMTPSenderRefused as exc:
            self.refusal = _Refusal(
                RoundTripCode.REJECTED_SENDER,
                f"The SMTP server refused the sender {self.from_address}: {exc.code} "
                f"{server_text(exc.message)}",
                _temporary_hint(exc.code)
                or f"The account {self.smtp.username} may not be allowed to send as "
                f"{self.from_address}: use the address the SMTP account belongs to.",
                "email",
            )
            return
        except SMTPDataError as exc:
            self.refusal = _Refusal(
                RoundTripCode.REJECTED_MESSAGE,
                f"The SMTP server refused the message: {exc.code} {server_text(exc.message)}",
                _temporary_hint(exc.code)
                or "The server's policy refused the message; its reply above should say why "
                "(for example, sending as this address is not allowed).",
                None,
            )
            return
        except SMTPNotSupported:
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                "The server does not accept non-ASCII email addresses (no SMTPUTF8).",
            ) from None
        except SMTPResponseException as exc:
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server refused to send the message: {exc.code} {server_text(exc.message)}",
            ) from None
        except ValueError:
            self.refusal = _Refusal(
                RoundTripCode.INVALID_ADDRESS,
                "The sender or recipient address cannot be sent over SMTP.",
                None,
                "to",
            )
            return
        self.sent = True
        self.accepted_at = time.monotonic()

    # --- IMAP ---------------------------------------------------------------------------

    async def _imap_login(self) -> None:
        """Log in as the IMAP probe does, then SELECT INBOX (read-write, to delete later)."""
        endpoint, settings, facts = self.imap, self.imap_settings, self.imap_facts
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
            self.wire = wire  # closed by _close_imap from here on, whatever happens
            # Asked again after STARTTLS: capabilities from before TLS may have been forged.
            _record_capabilities(facts, await wire.capabilities())
            if "LOGINDISABLED" in facts.capabilities:
                raise _plaintext_refused(endpoint, facts)
            await _login(wire, endpoint, facts)
        except ImapProtocolError as exc:
            raise _not_imap(exc) from None
        reply = await wire.command("SELECT", b"INBOX")
        if reply.status != "OK":
            raise ProbeFailure(
                ProbeCode.PROTOCOL_ERROR,
                f"The server would not open the INBOX: {reply.status} {server_text(reply.text)}",
            )

    async def _poll(self) -> None:
        """Search INBOX every poll_interval until the message is there or time is up."""
        assert self.wire is not None
        deadline = self.accepted_at + self.receive_timeout
        while True:
            # NOOP is how a client asks the server to report new messages (RFC 3501 6.1.2).
            await self._command("NOOP")
            found = await self._find()
            if found:
                self.found, self.found_at = found, time.monotonic()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(self.poll_interval, left))

    async def _delete(self) -> None:
        """Flag the message \\Deleted and expunge only it, then check it is gone."""
        uids = b",".join(b"%d" % uid for uid in self.found)
        await self._command("UID STORE", uids, b"+FLAGS.SILENT", b"(\\Deleted)")
        if "UIDPLUS" in self.imap_facts.capabilities:
            await self._command("UID EXPUNGE", uids)
        else:
            # A plain EXPUNGE removes every \Deleted message: run it only when no other
            # message is flagged, so a user's own deleted-but-kept mail survives.
            flagged = await self._search(b"DELETED")
            if not set(flagged) <= set(self.found):
                return
            await self._command("EXPUNGE")
        self.deleted = not await self._find()

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

    async def _find(self) -> list[int]:
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

    async def _close_imap(self) -> None:
        wire, self.wire = self.wire, None
        if wire is None:
            return
        within = min(_LOGOUT_TIMEOUT, self.imap_settings.connect_timeout)
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


def _temporary_hint(code: int) -> str | None:
    if 400 <= code < 500:
        return f"The refusal is temporary ({code}), for example greylisting: try again later."
    return None
