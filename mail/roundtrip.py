"""Round trip: send a real test message over SMTP, find it over IMAP, then delete it.

Both sides connect exactly as the probes do (address guard, TLS verified or pinned, AUTH /
LOGIN), through the probes' own helpers, and their failures carry the probes' codes, fields
and hints. When the message is to be checked (sent to the sender's own address), the IMAP
login comes first: a broken IMAP login then costs no stray message in the user's mailbox.

The message is built in mail.message, sent by mail.roundtrip_smtp and looked for by
mail.roundtrip_imap; this module runs the steps in order and words the outcome.

The message is found by a unique `X-Inboxd-Test` header. It is a random token, not a
secret, like the Message-ID built from it; passwords never reach a result (the probes'
scrubbing covers both endpoints' passwords here).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from mail.endpoint import Endpoint, ProbeSettings
from mail.failures import ProbeFailure
from mail.message import (
    SUBJECT,
    TEST_HEADER,
    InvalidAddress,
    TestMessage,
    UnsafeHeader,
    build_message,
    message_id,
)
from mail.probe_runner import attempt, failure_result, final_scrub, secrets_scope
from mail.results import ProbeCode, Protocol
from mail.roundtrip_imap import TestMailbox
from mail.roundtrip_result import RoundTripCode, RoundTripResult
from mail.roundtrip_smtp import TestSender

__all__ = ["SUBJECT", "TEST_HEADER", "RoundTripCode", "RoundTripResult", "run_round_trip"]


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

        self.sender = TestSender(
            smtp, smtp_settings, from_address=self.from_address, to_address=self.to_address
        )
        self.mailbox = TestMailbox(imap, imap_settings, token)
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
        sent = self.sender.sent
        received: bool | None = bool(self.found) if self.check else None
        delay_ms = int((self.found_at - self.sender.accepted_at) * 1000) if self.found else None
        return RoundTripResult(
            ok=sent and received is not False and code == ProbeCode.OK.value,
            sent=sent,
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
            await self.mailbox.close()

    async def _trip(self, message: TestMessage) -> RoundTripResult:
        if self.check:
            failure = await attempt(self.mailbox.login, self.imap_settings.overall_timeout)
            if failure is not None:
                return self._failed("imap", failure, "IMAP: ")

        async def send() -> None:
            await self.sender.send(message)

        failure = await attempt(send, self.smtp_settings.overall_timeout)
        if self.sender.refusal is not None:
            r = self.sender.refusal
            return self._result(r.code.value, r.message, hint=r.hint, field=r.field)
        if failure is not None and not self.sender.sent:
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
        delay_ms = int((self.found_at - self.sender.accepted_at) * 1000)
        text = f"Sent through {where} and received over IMAP after {delay_ms} ms"
        if self.deleted:
            return self._result(ProbeCode.OK.value, f"{text}; the test message was deleted.")
        return self._result(
            ProbeCode.OK.value,
            f"{text}, but the test message could not be deleted.",
            hint=f'You may delete the message "{SUBJECT}" from the INBOX yourself.',
        )

    async def _poll(self) -> None:
        """Search INBOX every poll_interval until the message is there or time is up."""
        deadline = self.sender.accepted_at + self.receive_timeout
        while True:
            await self.mailbox.noop()
            found = await self.mailbox.find()
            if found:
                self.found, self.found_at = found, time.monotonic()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(self.poll_interval, left))

    async def _delete(self) -> None:
        self.deleted = await self.mailbox.delete(self.found)
