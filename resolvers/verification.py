"""Verifying an inbox: log in to its SMTP and IMAP servers (and check its domain's DNS).

The job machinery (claiming, leases, retries) lives in ``inboxd.worker`` and ``storage.job_runs``;
this module decides what one attempt does and what its outcome means.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from mail.dns_lookup import DnsSettings
from mail.network import TargetError, resolve_target
from mail.presets import Security
from mail.probes import Endpoint, ProbeResult, ProbeSettings, probe_imap, probe_smtp
from mail.results import ProbeCode, Protocol
from mail.roundtrip import run_round_trip
from resolvers.domain import dns_status_for
from storage import inbox_passwords, job_runs, spacing
from storage.db import Database
from storage.models import utcnow
from storage.rows import InboxRow, TestRow
from storage.secrets import DecryptionError, KeyRing

log = structlog.get_logger("inboxd.verification")


@dataclass(frozen=True, slots=True)
class VerificationConfig:
    smtp: ProbeSettings
    imap: ProbeSettings
    dns: DnsSettings | None
    max_attempts: int = 5
    retry_base: timedelta = timedelta(seconds=5)
    retry_cap: timedelta = timedelta(minutes=10)
    round_trip_timeout: float = 60.0
    round_trip_poll_interval: float = 2.0


def _unreadable(side: Protocol) -> ProbeResult:
    return ProbeResult(
        protocol=side,
        ok=False,
        code=ProbeCode.SECRET_UNREADABLE,
        message="The stored password can no longer be decrypted, so no login was tried.",
        hint="Re-enter the password (updateEmailInbox); verification then runs again.",
        field=f"{side}.password",
    )


def _endpoint_or_none(inbox: InboxRow, side: Protocol, keyring: KeyRing) -> Endpoint | None:
    """The side's endpoint, or None when its password does not decrypt with any key."""
    try:
        return inbox_endpoint(inbox, side, keyring)
    except DecryptionError:
        log.warning("stored password unreadable", inbox_id=str(inbox.id), side=side)
        return None


def inbox_endpoint(inbox: InboxRow, side: str, keyring: KeyRing) -> Endpoint:
    return Endpoint(
        host=getattr(inbox, f"{side}_host"),
        port=getattr(inbox, f"{side}_port"),
        security=Security(getattr(inbox, f"{side}_security")),
        username=getattr(inbox, f"{side}_username"),
        password=inbox_passwords.decrypt_password(keyring, inbox, f"{side}_password"),
        tls_certificate_sha256=getattr(inbox, f"{side}_tls_certificate_sha256"),
    )


def retry_delay(attempt: int, config: VerificationConfig) -> timedelta:
    """Exponential backoff with full jitter: spreads retries of a burst of failures."""
    ceiling = min(config.retry_cap.total_seconds(), config.retry_base.total_seconds() * 2**attempt)
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def summarize(smtp: ProbeResult, imap: ProbeResult) -> str | None:
    failed = [r for r in (smtp, imap) if not r.ok]
    if not failed:
        return None
    return " ".join(f"{r.protocol.upper()} {r.code.value}: {r.message}" for r in failed)


async def _dns(inbox: InboxRow, config: VerificationConfig) -> dict[str, Any] | None:
    # Reported beside the logins; never fails the verification.
    return None if config.dns is None else await dns_status_for(inbox, config.dns)


async def _round_trip(
    inbox: InboxRow,
    test: job_runs.ClaimedTest,
    smtp: Endpoint,
    imap: Endpoint,
    config: VerificationConfig,
) -> dict[str, Any]:
    result = await run_round_trip(
        smtp,
        imap,
        from_address=inbox.email,
        to_address=test.round_trip_to or inbox.email,
        smtp_settings=config.smtp,
        imap_settings=config.imap,
        receive_timeout=config.round_trip_timeout,
        poll_interval=config.round_trip_poll_interval,
        provider=inbox.provider,
        from_name=inbox.display_name,
    )
    return result.to_dict()


def _skipped_round_trip() -> dict[str, Any]:
    return {
        "ok": False,
        "sent": False,
        "received": None,
        "deleted": False,
        "delay_ms": None,
        "message_id": "",
        "code": "SKIPPED",
        "message": "No test message was sent: the SMTP or IMAP login failed first.",
        "hint": "Fix the login problem reported beside this, then send the test again.",
        "field": None,
    }


async def _probe(
    probe: Callable[[Endpoint, ProbeSettings, str | None], Awaitable[ProbeResult]],
    side: Protocol,
    endpoint: Endpoint | None,
    settings: ProbeSettings,
    provider: str | None,
) -> ProbeResult:
    return _unreadable(side) if endpoint is None else await probe(endpoint, settings, provider)


def crashed_outcome(test: job_runs.ClaimedTest, config: VerificationConfig) -> job_runs.TestOutcome:
    """An attempt that raised instead of reporting: it counts, and is retried like network
    weather until the attempt limit."""
    retry_at = None
    if test.attempts < config.max_attempts:
        retry_at = utcnow() + retry_delay(test.attempts, config)
    return job_runs.TestOutcome(
        passed=False,
        smtp=None,
        imap=None,
        reason="The verification stopped on an unexpected error.",
        retry_at=retry_at,
        attempt=test.attempts,
        max_attempts=config.max_attempts,
    )


async def run_attempt(
    test: job_runs.ClaimedTest, keyring: KeyRing, config: VerificationConfig
) -> job_runs.TestOutcome:
    inbox = test.inbox
    smtp_endpoint = _endpoint_or_none(inbox, "smtp", keyring)
    imap_endpoint = _endpoint_or_none(inbox, "imap", keyring)
    smtp, imap, dns = await asyncio.gather(
        _probe(probe_smtp, "smtp", smtp_endpoint, config.smtp, inbox.provider),
        _probe(probe_imap, "imap", imap_endpoint, config.imap, inbox.provider),
        _dns(inbox, config),
    )
    logins_ok = smtp.ok and imap.ok
    passed = logins_ok
    reason = summarize(smtp, imap)
    round_trip = None
    if test.round_trip:
        if logins_ok and smtp_endpoint and imap_endpoint:
            round_trip = await _round_trip(inbox, test, smtp_endpoint, imap_endpoint, config)
            passed = bool(round_trip["ok"])
            if not passed:
                reason = f"Round trip {round_trip['code']}: {round_trip['message']}"
        else:
            round_trip = _skipped_round_trip()
    retry_at = None
    # Only network weather is retried. Never a refused login: providers lock accounts that
    # keep retrying a bad password.
    transient = not logins_ok and all(r.ok or r.transient for r in (smtp, imap))
    if transient and test.attempts < config.max_attempts:
        retry_at = utcnow() + retry_delay(test.attempts, config)
    return job_runs.TestOutcome(
        passed=passed,
        smtp=smtp.to_dict(),
        imap=imap.to_dict(),
        dns=dns,
        round_trip=round_trip,
        reason=reason,
        retry_at=retry_at,
        # The inbox's status is about its logins; a missing test message fails only the test.
        inbox_active=logins_ok,
        attempt=test.attempts,
        max_attempts=config.max_attempts,
    )


# A login due within this long waits in the worker; one further off is queued again.
LOGIN_WAIT_IN_PLACE = timedelta(seconds=1)


async def login_accounts(inbox: InboxRow, config: VerificationConfig) -> list[str]:
    """The spacing keys of the inbox's two logins: each resolved address and the host name as
    written, each with the case-folded username."""
    keys = []
    for side, settings in (("smtp", config.smtp), ("imap", config.imap)):
        host, port = getattr(inbox, f"{side}_host"), getattr(inbox, f"{side}_port")
        username = getattr(inbox, f"{side}_username")
        keys.append(spacing.account_key(host, username))
        try:
            target = await resolve_target(host, port, settings.network)
        except TargetError:
            continue  # no address, no login: the probe reports why
        keys.extend(spacing.account_key(ip, username) for ip, _family in target.addresses)
    return keys


async def take_login_slot(
    db: Database,
    test: job_runs.ClaimedTest,
    worker_id: str,
    config: VerificationConfig,
    login_spacing: timedelta,
) -> bool:
    """Wait for the accounts' next login slot, or queue the test again for it (False)."""
    accounts = await login_accounts(test.inbox, config)
    async with db.connection(background=True) as connection:
        booking = await spacing.book_login(
            connection, accounts, login_spacing, wait_at_most=LOGIN_WAIT_IN_PLACE
        )
    if booking.booked:
        await asyncio.sleep(booking.wait)
        return True
    seconds = round(login_spacing.total_seconds())
    async with db.connection(background=True) as connection:
        await job_runs.requeue(
            connection,
            test.id,
            worker_id,
            run_after=booking.at,
            reason=f"Waiting for its turn: this account was logged in to less than {seconds} s "
            f"ago, and logins to one account are spaced. Starts at "
            f"{booking.at.isoformat(timespec='seconds')}.",
        )
    log.info("connection test waits for its login slot", test_id=str(test.id))
    return False


async def store_outcome(
    db: Database, test: job_runs.ClaimedTest, worker_id: str, outcome: job_runs.TestOutcome
) -> TestRow | None:
    """Record an attempt's outcome (see job_runs.record_outcome). None: the test was lost."""
    async with db.connection(background=True) as connection:
        stored = await job_runs.record_outcome(connection, test.id, worker_id, outcome)
    log.info(
        "connection test finished",
        test_id=str(test.id),
        inbox_id=str(test.inbox.id),
        passed=outcome.passed,
        retrying=outcome.retry_at is not None,
        kept=stored is not None,
    )
    return stored


async def verify(
    db: Database,
    keyring: KeyRing,
    config: VerificationConfig,
    test: job_runs.ClaimedTest,
    worker_id: str,
) -> TestRow | None:
    """Run one claimed test to its outcome. Returns the stored test, or None if it was lost.

    The claim already marked the inbox VERIFYING: the probes start at once.
    """
    outcome = await run_attempt(test, keyring, config)
    return await store_outcome(db, test, worker_id, outcome)
