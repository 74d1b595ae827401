"""Transient failures are retried with jittered exponential backoff: a burst of failures (a
provider outage) must not come back as a burst of retries at the same instant."""

from __future__ import annotations

from datetime import timedelta

from mail.probes import ProbeSettings
from resolvers.verification import VerificationConfig, retry_delay

CONFIG = VerificationConfig(
    smtp=ProbeSettings(),
    imap=ProbeSettings(),
    dns=None,
    retry_base=timedelta(seconds=5),
    retry_cap=timedelta(minutes=10),
)


def seconds(attempt: int, config: VerificationConfig = CONFIG) -> list[float]:
    return [retry_delay(attempt, config).total_seconds() for _ in range(200)]


def test_delays_are_spread_not_identical():
    for attempt in (0, 1, 3):
        delays = seconds(attempt)
        assert len(set(delays)) > 150, f"attempt {attempt}: retries would land together"
        ceiling = 5 * 2**attempt
        # Spread over the upper half of the window, never past it.
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4


def test_delay_grows_with_the_attempt_and_stops_at_the_cap():
    assert max(seconds(0)) <= 5 < min(seconds(2))
    capped = seconds(20)
    assert all(300 <= d <= 600 for d in capped)
    assert len(set(capped)) > 150
