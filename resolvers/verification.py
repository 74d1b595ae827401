"""Verifying an inbox: log in to its SMTP and IMAP servers (and check its domain's DNS).

The job machinery (claiming, leases, retries) lives in ``inboxd.worker`` and ``storage.job_runs``;
this module decides what one attempt does and what its outcome means.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from mail.dns_lookup import DnsSettings
from mail.endpoint import Login
from mail.network import TargetError, resolve_target
from mail.probes import Endpoint, ProbeResult, ProbeSettings, probe_imap, probe_smtp
from mail.results import ProbeCode, Protocol
from mail.roundtrip import run_round_trip
from resolvers.domain import dns_status_for
from resolvers.logins import (
    Logins,
    ReauthRequired,
    TokenUnavailable,
    endpoint_with,
    is_oauth,
    password_endpoint,
)
from storage import job_runs, spacing
from storage.db import Database
from storage.models import utcnow
from storage.rows import InboxRow, TestRow
from storage.secrets import DecryptionError, Secret

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


Target = Endpoint | ProbeResult  # where to log in, or why no login is tried


def _password_target(inbox: InboxRow, side: Protocol, logins: Logins) -> Target:
    try:
        return password_endpoint(inbox, side, logins.keyring)
    except DecryptionError:
        log.warning("stored password unreadable", inbox_id=str(inbox.id), side=side)
        return _unreadable(side)


async def login_targets(
    inbox: InboxRow, logins: Logins, rejected: Secret | None = None
) -> dict[Protocol, Target]:
    """Each side's endpoint; for an OAuth inbox one fresh access token serves both (refreshed
    first when ``rejected`` is the token a server refused)."""
    sides: tuple[Protocol, Protocol] = ("smtp", "imap")
    if not is_oauth(inbox):
        return {side: _password_target(inbox, side, logins) for side in sides}
    try:
        token = await logins.access_token(inbox, rejected=rejected)
    except DecryptionError:
        log.warning("stored OAuth token unreadable", inbox_id=str(inbox.id))
        unreadable = ProbeResult(
            protocol="smtp",
            ok=False,
            code=ProbeCode.SECRET_UNREADABLE,
            message="The stored OAuth token can no longer be decrypted, so no login was tried.",
            hint="Connect the account again (startOAuthConnection with this inbox's id).",
            field="oauth2",
        )
        return {side: dataclasses.replace(unreadable, protocol=side) for side in sides}
    except ReauthRequired as exc:
        return {side: _reauth(side, exc) for side in sides}
    except TokenUnavailable:
        return {side: _provider_unreachable(side) for side in sides}
    return {side: endpoint_with(inbox, side, token, Login.OAUTH2) for side in sides}


def _reauth(side: Protocol, exc: ReauthRequired) -> ProbeResult:
    return ProbeResult(
        protocol=side,
        ok=False,
        code=ProbeCode.REAUTH_REQUIRED,
        message=exc.message,
        hint=exc.hint,
        field="oauth2",
    )


def _provider_unreachable(side: Protocol) -> ProbeResult:
    # Network weather at the provider: retried like a server that does not answer.
    return ProbeResult(
        protocol=side,
        ok=False,
        code=ProbeCode.TIMEOUT,
        message="The OAuth provider could not be reached to refresh the access token; no "
        "login was tried.",
        hint="Retried automatically.",
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
    target: Target,
    settings: ProbeSettings,
    provider: str | None,
) -> ProbeResult:
    return target if isinstance(target, ProbeResult) else await probe(target, settings, provider)


async def _logins(
    inbox: InboxRow, logins: Logins, config: VerificationConfig
) -> tuple[dict[Protocol, Target], ProbeResult, ProbeResult]:
    """Both logins; an OAuth token a server refused is refreshed once and that login tried
    once more (never in a loop)."""
    targets = await login_targets(inbox, logins)
    smtp, imap = await asyncio.gather(
        _probe(probe_smtp, targets["smtp"], config.smtp, inbox.provider),
        _probe(probe_imap, targets["imap"], config.imap, inbox.provider),
    )
    refused = [r.protocol for r in (smtp, imap) if r.code is ProbeCode.TOKEN_REJECTED]
    used = targets[refused[0]] if refused else None
    if isinstance(used, Endpoint) and isinstance(used.password, Secret):
        targets = await login_targets(inbox, logins, rejected=used.password)
        if "smtp" in refused:
            smtp = await _probe(probe_smtp, targets["smtp"], config.smtp, inbox.provider)
        if "imap" in refused:
            imap = await _probe(probe_imap, targets["imap"], config.imap, inbox.provider)
    return targets, smtp, imap


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
    test: job_runs.ClaimedTest, logins: Logins, config: VerificationConfig
) -> job_runs.TestOutcome:
    inbox = test.inbox
    (targets, smtp, imap), dns = await asyncio.gather(
        _logins(inbox, logins, config), _dns(inbox, config)
    )
    smtp_endpoint, imap_endpoint = targets["smtp"], targets["imap"]
    logins_ok = smtp.ok and imap.ok
    passed = logins_ok
    reason = summarize(smtp, imap)
    round_trip = None
    if test.round_trip:
        if (
            logins_ok
            and isinstance(smtp_endpoint, Endpoint)
            and isinstance(imap_endpoint, Endpoint)
        ):
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
    logins: Logins,
    config: VerificationConfig,
    test: job_runs.ClaimedTest,
    worker_id: str,
) -> TestRow | None:
    """Run one claimed test to its outcome. Returns the stored test, or None if it was lost.

    The claim already marked the inbox VERIFYING: the probes start at once.
    """
    outcome = await run_attempt(test, logins, config)
    return await store_outcome(db, test, worker_id, outcome)
