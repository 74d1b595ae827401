"""One SMTP transaction through an inbox's own server: connect, log in, MAIL, RCPT, DATA.

Guarantees:

- The connection is the SMTP probe's (``open_smtp_session``): the outbound address guard,
  TLS verified against the host name or pinned, AUTH with the inbox's credentials.
- ``send_message`` never raises for anything a peer does; every outcome is a ``SendOutcome``:
  accepted (the server's reply to DATA, and the recipients it refused while taking others),
  permanent (a 5xx, or a setting only the user can fix: code, reply and a hint), or not
  permanent (a 4xx, a timeout, a broken connection: try again later).
- No text of an outcome holds the password in any form a server might echo (plain, base64,
  SASL PLAIN), whatever the server says.

``before_data`` is the caller's write-ahead mark. It is awaited inside DATA, after the server
has taken the whole message but its final line, the lone ``.`` that ends it: until that line
the server holds an unfinished transaction, which a lost connection discards (RFC 5321
4.1.1.4). So a caller that dies or fails before its mark is committed has sent nothing (the
message may go again), and only the time between that line and the server's reply is left
in doubt. A timeout or broken connection there leaves the message's fate unknown (RFC
1047): such an outcome says so (``unknown``), so the caller does not send it again blindly.
If ``before_data`` answers False, the connection is closed without that line: nothing sent.

With a ``pool`` (``mail.smtp_pool``) the session is the inbox's idle one when there is one,
and is given back after the server accepted the message. A reused session found dead (the
server closed it while idle, answered 421, or the connection reset) before ``before_data``
was called has been handed nothing: the message is sent once more on a fresh session. From
``before_data`` on, never: the outcome is the one this session gives. After any outcome but
acceptance the session is closed, never kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)

from mail.endpoint import Endpoint, ProbeSettings
from mail.failures import ProbeFailure, find_cause
from mail.probe_runner import (
    ProbeFacts,
    attempt,
    final_scrub,
    resolve_checked,
    secrets_scope,
    server_text,
)
from mail.results import ProbeCode
from mail.smtp_data import BeforeData, Progress, Withheld, hook_data, unhook_data
from mail.smtp_pool import SmtpPool, SmtpSession
from mail.smtp_probe import close_smtp_session, open_smtp_session

# Failures of the connection only the user can fix; other probe codes may pass on their own.
_SETTINGS_CODES = frozenset(
    {
        ProbeCode.AUTH_FAILED,
        ProbeCode.CERTIFICATE_UNTRUSTED,
        ProbeCode.HOST_NOT_ALLOWED,
        ProbeCode.STARTTLS_UNSUPPORTED,
        ProbeCode.PLAINTEXT_AUTH_REFUSED,
        ProbeCode.SECRET_UNREADABLE,
    }
)
_AUTH_HINT = (
    "Check the inbox's SMTP username and password (providers with two-step verification "
    "need an app password)."
)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    accepted: bool
    permanent: bool  # True for a 5xx (do not retry); False for 4xx/timeouts/connection
    code: int | None  # the SMTP reply code, when there was one
    reply: str  # the server's reply text (never containing the password)
    hint: str | None  # what the user should fix, for permanent failures
    # recipient -> reply, for recipients the server refused while accepting others
    refused: dict[str, str] = field(default_factory=dict)
    # Connecting or logging in failed: the probe's code. TOKEN_REJECTED (an OAuth inbox's
    # access token refused) asks the caller to refresh the token once and send again.
    login_code: ProbeCode | None = None
    # The connection ended after the message's last line was sent and before the server's
    # reply: it may have the message. Never permanent, never to be sent again unchecked.
    unknown: bool = False
    # ``before_data`` answered False: DATA abandoned before the message's last line, so the
    # server cannot have it.
    withheld: bool = False


async def send_message(
    endpoint: Endpoint,
    settings: ProbeSettings,
    *,
    envelope_from: str,
    recipients: list[str],
    data: bytes,
    before_data: BeforeData | None = None,
    pool: SmtpPool | None = None,
    owner: str = "",
) -> SendOutcome:
    """Send ``data`` (``mail.compose`` output) from ``envelope_from`` to ``recipients``,
    within ``settings.overall_timeout``. Never raises for peer behaviour. ``pool``: reuse
    and keep ``owner``'s (an inbox's) session."""
    envelope = _Envelope(envelope_from, recipients, data, before_data)
    with secrets_scope(endpoint) as secrets:
        outcome = await _send(endpoint, settings, envelope, pool, owner)
        return SendOutcome(
            accepted=outcome.accepted,
            permanent=outcome.permanent,
            code=outcome.code,
            reply=final_scrub(outcome.reply, secrets) or "",
            hint=final_scrub(outcome.hint, secrets),
            refused={k: final_scrub(v, secrets) or "" for k, v in outcome.refused.items()},
            login_code=outcome.login_code,
            unknown=outcome.unknown,
            withheld=outcome.withheld,
        )


@dataclass(frozen=True, slots=True)
class _Envelope:
    sender: str
    recipients: list[str]
    data: bytes
    before_data: BeforeData | None


async def _on(session: SmtpSession, envelope: _Envelope, progress: Progress) -> SendOutcome:
    hook_data(session.smtp, envelope.before_data, progress)
    try:
        return await _transmit(
            session.smtp, session.facts, envelope.sender, envelope.recipients, envelope.data
        )
    finally:
        unhook_data(session.smtp)


async def _send(
    endpoint: Endpoint,
    settings: ProbeSettings,
    envelope: _Envelope,
    pool: SmtpPool | None,
    owner: str,
) -> SendOutcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.overall_timeout
    facts = ProbeFacts(deadline=deadline)
    outcome: list[SendOutcome] = []
    progress = Progress()

    async def on_reused(session: SmtpSession, uses: int) -> bool:
        """The message on an idle session; False when that session turned out dead before
        anything was handed over (a fresh one may then send it)."""
        assert pool is not None
        session.facts.deadline = deadline
        try:
            result = await _on(session, envelope, progress)
        except BaseException as exc:
            pool.discard(session)
            if progress.handed or not isinstance(exc, Exception):
                raise
            return False
        if result.accepted:
            pool.give_back(owner, endpoint, session, uses + 1)
        else:
            pool.discard(session)
            if not progress.handed and not session.smtp.is_connected:
                return False  # closed by the server (421) or lost before DATA
        outcome.append(result)
        return True

    async def transaction() -> None:
        idle = pool.take(owner, endpoint) if pool is not None else None
        if idle is not None and await on_reused(*idle):
            return
        target = await resolve_checked(endpoint, settings)
        session = SmtpSession(await open_smtp_session(endpoint, settings, target, facts), facts)
        if pool is None:
            try:
                outcome.append(await _on(session, envelope, progress))
            finally:
                await close_smtp_session(session.smtp, settings, facts)
            return
        try:
            result = await _on(session, envelope, progress)
        except BaseException:
            pool.discard(session)
            raise
        if result.accepted:
            pool.give_back(owner, endpoint, session, 1)
        else:
            pool.discard(session)
        outcome.append(result)

    failure = await attempt(transaction, settings.overall_timeout, settings.connect_timeout)
    if outcome:  # decided, whatever the goodbye did
        return outcome[0]
    assert failure is not None
    if progress.began:
        return SendOutcome(
            accepted=False,
            permanent=False,
            code=None,
            reply=f"The connection ended before the server answered the message: {failure.message}",
            hint=None,
            unknown=True,
        )
    return _connection_outcome(failure)


async def _transmit(
    smtp: aiosmtplib.SMTP,
    facts: ProbeFacts,
    envelope_from: str,
    recipients: list[str],
    data: bytes,
) -> SendOutcome:
    if not recipients:
        return _refusal(None, "No recipient to send to.", "Add at least one recipient.")
    if facts.size_limit is not None and len(data) > facts.size_limit:
        return _refusal(
            None,
            f"The server takes messages up to {facts.size_limit} bytes; this one is "
            f"{len(data)} bytes.",
            "Send smaller or fewer attachments.",
        )
    utf8 = not (envelope_from + "".join(recipients)).isascii() or not data.isascii()
    try:
        refused, reply = await smtp.sendmail(
            envelope_from, recipients, data, mail_options=["SMTPUTF8"] if utf8 else []
        )
    except SMTPSenderRefused as exc:
        return _by_code(exc.code, exc.message, _sender_hint(exc.code, envelope_from))
    except SMTPRecipientsRefused as exc:
        return _all_refused(exc)
    except Withheld:
        return SendOutcome(
            accepted=False,
            permanent=False,
            code=None,
            reply="Not sent: the attempt could not be recorded before the message was ended.",
            hint=None,
            withheld=True,
        )
    except SMTPDataError as exc:
        return _by_code(exc.code, exc.message, _data_hint(exc.code))
    except SMTPNotSupported:
        return _refusal(
            None,
            "The server does not take non-ASCII email addresses (no SMTPUTF8).",
            "Use ASCII addresses, or a server that offers SMTPUTF8.",
        )
    except SMTPResponseException as exc:  # RSET and the like: the state is unclear
        return _by_code(exc.code, exc.message, None)
    except ValueError:  # aiosmtplib parses each address before sending any
        return _refusal(
            None,
            "An address of the envelope cannot be sent over SMTP.",
            "Check the sender and recipient addresses.",
        )
    # Any other exception (timeout, dropped connection) is the runner's to classify.
    return SendOutcome(
        accepted=True,
        permanent=False,
        code=250,
        reply=server_text(reply),
        hint=None,
        refused={rcpt: f"{r.code} {server_text(r.message)}" for rcpt, r in refused.items()},
    )


def _refusal(code: int | None, reply: str, hint: str | None) -> SendOutcome:
    return SendOutcome(accepted=False, permanent=True, code=code, reply=reply, hint=hint)


def _by_code(code: int, message: str, hint: str | None) -> SendOutcome:
    permanent = 500 <= code < 600
    if permanent:
        hint = _size_hint(code, message) or hint or _generic_hint(code)
    return SendOutcome(
        accepted=False,
        permanent=permanent,
        code=code,
        reply=server_text(message),
        hint=hint if permanent else None,
    )


def _all_refused(exc: SMTPRecipientsRefused) -> SendOutcome:
    refusals = exc.recipients
    # A refusal that may pass (4xx) makes the whole attempt worth repeating.
    chosen = next((r for r in refusals if r.code < 500), refusals[0] if refusals else None)
    if chosen is None:
        return _by_code(550, "", None)
    outcome = _by_code(
        chosen.code,
        chosen.message,
        "Check the recipient addresses: the server refused every one of them.",
    )
    return SendOutcome(
        accepted=False,
        permanent=outcome.permanent,
        code=outcome.code,
        reply=f"{chosen.recipient}: {outcome.reply}",
        hint=outcome.hint,
        refused={r.recipient: f"{r.code} {server_text(r.message)}" for r in refusals},
    )


def _sender_hint(code: int, envelope_from: str) -> str:
    if code in (530, 535, 538):
        return _AUTH_HINT
    return (
        f"The server does not let this account send as {envelope_from}: use the address the "
        "SMTP account belongs to, or one it may send as."
    )


def _data_hint(code: int) -> str:
    if code == 554:
        return (
            "The server's policy refused the message (a spam or content filter, or sending "
            "as this address); its reply says why."
        )
    return "The server refused the message; its reply says why."


def _size_hint(code: int, message: str) -> str | None:
    if code == 552 or "5.3.4" in message:
        return "The message is larger than the server takes: send smaller or fewer attachments."
    return None


def _generic_hint(code: int) -> str:
    if code in (530, 534, 535, 538):
        return _AUTH_HINT
    if code in (550, 551, 553):
        return "The server refused a mailbox: check the sender and recipient addresses."
    return "The server refused the message permanently; its reply says why."


def _connection_outcome(failure: ProbeFailure) -> SendOutcome:
    """Connecting or logging in failed: permanent only when the user must change something."""
    response = find_cause(failure, SMTPResponseException)
    code = response.code if response is not None and response.code > 0 else None
    if code is not None and code < 500:
        permanent = False
    elif code is not None or failure.code in _SETTINGS_CODES:
        permanent = True
    else:  # a protocol error that names a setting (port, security) will not pass by itself
        permanent = failure.code is ProbeCode.PROTOCOL_ERROR and failure.field is not None
    hint = failure.hint
    if failure.code is ProbeCode.AUTH_FAILED:
        hint = _AUTH_HINT
    if permanent and hint is None:
        hint = "Check the inbox's SMTP settings."
    return SendOutcome(
        accepted=False,
        permanent=permanent,
        code=code,
        reply=failure.message,
        hint=hint if permanent else None,
        login_code=failure.code,
    )
