"""What a domain's DNS check reports: one RecordCheck per record, and the whole status.

States: PASS (fine, maybe with advice), WARN (works, should be improved), FAIL (broken or
harmful), MISSING (not published: NXDOMAIN or no record of that type), ERROR (DNS did not
answer; never reported as MISSING).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mail.dns_lookup import Lookup


class CheckState(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    MISSING = "MISSING"
    ERROR = "ERROR"


# How bad a finding is when several are combined into one state; MISSING never combines.
_RANK = {CheckState.PASS: 0, CheckState.WARN: 1, CheckState.ERROR: 2, CheckState.FAIL: 3}
# For DomainSetupStatus.overall: the worst state of the four records.
_OVERALL_RANK = {
    CheckState.PASS: 0,
    CheckState.WARN: 1,
    CheckState.MISSING: 2,
    CheckState.ERROR: 3,
    CheckState.FAIL: 4,
}


@dataclass(frozen=True, slots=True)
class RecordCheck:
    state: CheckState
    records: list[str] = field(default_factory=list)
    message: str = ""  # what to add or change; for PASS, a summary (maybe with advice)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe values only

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "records": list(self.records),
            "message": self.message,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordCheck:
        return cls(
            state=CheckState(data["state"]),
            records=[str(r) for r in data.get("records", [])],
            message=str(data.get("message", "")),
            details=dict(data.get("details", {})),
        )


@dataclass(frozen=True, slots=True)
class DomainSetupStatus:
    domain: str
    smtp_host: str | None
    mx: RecordCheck
    spf: RecordCheck
    dkim: RecordCheck
    dmarc: RecordCheck
    checked_at: datetime  # timezone-aware UTC

    @property
    def overall(self) -> CheckState:
        """The worst state: FAIL > ERROR > MISSING > WARN > PASS."""
        states = (self.mx.state, self.spf.state, self.dkim.state, self.dmarc.state)
        return max(states, key=_OVERALL_RANK.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "smtp_host": self.smtp_host,
            "mx": self.mx.to_dict(),
            "spf": self.spf.to_dict(),
            "dkim": self.dkim.to_dict(),
            "dmarc": self.dmarc.to_dict(),
            "checked_at": self.checked_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSetupStatus:
        checked_at = datetime.fromisoformat(data["checked_at"])
        if checked_at.tzinfo is None:
            checked_at = checked_at.replace(tzinfo=UTC)
        smtp_host = data.get("smtp_host")
        return cls(
            domain=str(data["domain"]),
            smtp_host=None if smtp_host is None else str(smtp_host),
            mx=RecordCheck.from_dict(data["mx"]),
            spf=RecordCheck.from_dict(data["spf"]),
            dkim=RecordCheck.from_dict(data["dkim"]),
            dmarc=RecordCheck.from_dict(data["dmarc"]),
            checked_at=checked_at,
        )


class Findings:
    """Problems (WARN/ERROR/FAIL) and advice (PASS) collected while checking one record."""

    def __init__(self) -> None:
        self._items: list[tuple[CheckState, str]] = []

    def add(self, state: CheckState, message: str) -> None:
        self._items.append((state, message))

    def advise(self, message: str) -> None:
        self._items.append((CheckState.PASS, message))

    def cap(self, worst: CheckState) -> None:
        """Lower every finding worse than `worst` to `worst`."""
        self._items = [
            (worst if _RANK[state] > _RANK[worst] else state, message)
            for state, message in self._items
        ]

    @property
    def state(self) -> CheckState:
        return max((s for s, _ in self._items), key=_RANK.__getitem__, default=CheckState.PASS)

    def message(self, ok: str) -> str:
        problems = sorted(
            (item for item in self._items if item[0] is not CheckState.PASS),
            key=lambda item: -_RANK[item[0]],
        )
        advice = [m for s, m in self._items if s is CheckState.PASS]
        parts = [m for _, m in problems] if problems else [ok]
        return " ".join(parts + advice)


def error_check(lookup: Lookup, what: str) -> RecordCheck:
    return RecordCheck(
        CheckState.ERROR,
        message=(
            f"Could not check {what}: {lookup.describe_failure()}. Nothing was concluded about "
            f"the record; try again, and if it keeps failing make sure the domain's DNS servers "
            f"answer."
        ),
        details={"error": lookup.error, "query": f"{lookup.name} {lookup.rdtype}"},
    )
