"""Verifying an inbox: log in to its SMTP and IMAP servers (and check its domain's DNS).

The job machinery (claiming, leases, retries) lives in ``inboxd.worker`` and ``storage.jobs``;
this module decides what one attempt does and what its outcome means.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from mail.dns_checks import check_domain_setup
from mail.dns_lookup import DnsSettings
from mail.presets import Security
from mail.probes import Endpoint, ProbeResult, ProbeSettings, probe_imap, probe_smtp
from storage import inboxes, jobs
from storage.db import Database
from storage.models import ConnectionTest, EmailInbox, utcnow
from storage.secrets import KeyRing

log = structlog.get_logger("inboxd.verification")


@dataclass(frozen=True, slots=True)
class VerificationConfig:
    smtp: ProbeSettings
    imap: ProbeSettings
    dns: DnsSettings | None
    max_attempts: int = 5
    retry_base: timedelta = timedelta(seconds=5)
    retry_cap: timedelta = timedelta(minutes=10)


def _endpoint(inbox: EmailInbox, side: str, keyring: KeyRing) -> Endpoint:
    return Endpoint(
        host=getattr(inbox, f"{side}_host"),
        port=getattr(inbox, f"{side}_port"),
        security=Security(getattr(inbox, f"{side}_security")),
        username=getattr(inbox, f"{side}_username"),
        password=inboxes.decrypt_password(keyring, inbox, f"{side}_password"),
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


async def _dns(inbox: EmailInbox, config: VerificationConfig) -> dict[str, Any] | None:
    if config.dns is None:
        return None
    try:
        status = await check_domain_setup(
            inbox.email.rpartition("@")[2],
            smtp_host=inbox.smtp_host,
            dkim_selectors=list(inbox.dkim_selectors or []),
            settings=config.dns,
        )
    except ValueError as exc:  # a domain DNS cannot even ask about
        return {"error": str(exc)}
    return status.to_dict()


async def run_attempt(
    inbox: EmailInbox, test: ConnectionTest, keyring: KeyRing, config: VerificationConfig
) -> jobs.TestOutcome:
    smtp, imap, dns = await asyncio.gather(
        probe_smtp(_endpoint(inbox, "smtp", keyring), config.smtp, inbox.provider),
        probe_imap(_endpoint(inbox, "imap", keyring), config.imap, inbox.provider),
        _dns(inbox, config),
    )
    passed = smtp.ok and imap.ok
    reason = summarize(smtp, imap)
    retry_at = None
    # Only network weather is retried. Never a refused login: providers lock accounts that
    # keep retrying a bad password.
    transient = not passed and all(r.ok or r.transient for r in (smtp, imap))
    if transient and test.attempts < config.max_attempts:
        retry_at = utcnow() + retry_delay(test.attempts, config)
    return jobs.TestOutcome(
        passed=passed,
        smtp=smtp.to_dict(),
        imap=imap.to_dict(),
        dns=dns,
        reason=reason,
        retry_at=retry_at,
    )


async def verify(
    db: Database, keyring: KeyRing, config: VerificationConfig, test_id: uuid.UUID, worker_id: str
) -> ConnectionTest | None:
    """Run one claimed test to its outcome. Returns the stored test, or None if it was lost."""
    async with db.transaction() as session:
        test, inbox = await jobs.load_for_run(session, test_id)
        await jobs.mark_verifying(session, test)
    outcome = await run_attempt(inbox, test, keyring, config)
    async with db.transaction() as session:
        stored = await jobs.record_outcome(session, test_id, worker_id, outcome)
    log.info(
        "connection test finished",
        test_id=str(test_id),
        inbox_id=str(inbox.id),
        passed=outcome.passed,
        retrying=outcome.retry_at is not None,
        kept=stored is not None,
    )
    return stored
