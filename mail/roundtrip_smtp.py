"""The SMTP side of a round trip: send the checked test message through the probes' session.

A refusal of the envelope or the message is the round trip's own outcome (a Refusal, with
the field the user should change); anything else fails as the probes do (ProbeFailure).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

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
from mail.message import TestMessage
from mail.probe_runner import ProbeFacts, resolve_checked, server_text
from mail.results import ProbeCode
from mail.roundtrip_result import RoundTripCode
from mail.smtp_probe import close_smtp_session, open_smtp_session


@dataclass(slots=True)
class Refusal:
    """The SMTP server refused our envelope or message: the round trip's own codes."""

    code: RoundTripCode
    message: str
    hint: str | None
    field: str | None


class TestSender:
    """Sends one test message from ``from_address`` to ``to_address`` through ``endpoint``."""

    def __init__(
        self, endpoint: Endpoint, settings: ProbeSettings, *, from_address: str, to_address: str
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.from_address = from_address
        self.to_address = to_address
        self.sent = False
        self.accepted_at = 0.0  # time.monotonic() when the server accepted the message
        self.refusal: Refusal | None = None

    async def send(self, message: TestMessage) -> None:
        settings = self.settings
        facts = ProbeFacts(deadline=asyncio.get_running_loop().time() + settings.overall_timeout)
        target = await resolve_checked(self.endpoint, settings)
        client = await open_smtp_session(self.endpoint, settings, target, facts)
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
            self.refusal = Refusal(
                RoundTripCode.REJECTED_RECIPIENT,
                f"The SMTP server refused the recipient {self.to_address}: {code} {reply}",
                temporary_hint(code)
                or "Check the recipient address: the server may not know it, or may only "
                "accept some recipient domains from this account.",
                "to",
            )
            return
        except SMTPSenderRefused as exc:
            self.refusal = Refusal(
                RoundTripCode.REJECTED_SENDER,
                f"The SMTP server refused the sender {self.from_address}: {exc.code} "
                f"{server_text(exc.message)}",
                temporary_hint(exc.code)
                or f"The account {self.endpoint.username} may not be allowed to send as "
                f"{self.from_address}: use the address the SMTP account belongs to.",
                "email",
            )
            return
        except SMTPDataError as exc:
            self.refusal = Refusal(
                RoundTripCode.REJECTED_MESSAGE,
                f"The SMTP server refused the message: {exc.code} {server_text(exc.message)}",
                temporary_hint(exc.code)
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
            self.refusal = Refusal(
                RoundTripCode.INVALID_ADDRESS,
                "The sender or recipient address cannot be sent over SMTP.",
                None,
                "to",
            )
            return
        self.sent = True
        self.accepted_at = time.monotonic()


def temporary_hint(code: int) -> str | None:
    if 400 <= code < 500:
        return f"The refusal is temporary ({code}), for example greylisting: try again later."
    return None
