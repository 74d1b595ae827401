"""Authenticated SMTP sessions kept per inbox between messages (``mail.session_pool``), so
consecutive messages of one inbox skip the TCP, TLS and AUTH round trips.

``mail.send.send_message`` decides what is safe: a session is given back only after the
server accepted a message (the transaction is complete, nothing to RSET), is discarded after
any other outcome, and a reused session that turns out dead is replaced only while nothing
was handed over (before the caller's write-ahead mark and DATA).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aiosmtplib

from mail.probe_runner import ProbeFacts
from mail.session_pool import PoolLimits, SessionPool

_QUIT_TIMEOUT = 2.0


@dataclass(slots=True)
class SmtpSession:
    smtp: aiosmtplib.SMTP
    facts: ProbeFacts  # what EHLO said when it was opened (SIZE, for one)


def _alive(session: SmtpSession) -> bool:
    return session.smtp.is_connected


async def _quit(session: SmtpSession) -> None:
    """QUIT, briefly, then close. Never raises."""
    try:
        if session.smtp.is_connected:
            with contextlib.suppress(Exception):
                await session.smtp.quit(timeout=_QUIT_TIMEOUT)
    finally:
        session.smtp.close()


SmtpPool = SessionPool[SmtpSession]


def smtp_pool(limits: PoolLimits) -> SmtpPool:
    """The SMTP sessions of one sending worker, by inbox; ``close`` QUITs the idle ones."""
    return SessionPool(limits, _alive, _quit, "smtp")
