"""The one exception probe steps raise to end a probe with a specific, user-facing result."""

from __future__ import annotations

from typing import TypeVar

from mail.results import ProbeCode, TlsInfo

E = TypeVar("E", bound=BaseException)


class ProbeFailure(Exception):
    """A probe outcome decided by a step; `message` and `hint` are shown to the user.

    `field` is the input to blame without its protocol prefix ("password", "port",
    "security", "tlsCertificateSha256"); the runner adds "smtp."/"imap.".
    """

    def __init__(
        self,
        code: ProbeCode,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
        tls: TlsInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.field = field
        self.tls = tls


def find_cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in exc's cause/context chain (libraries wrap errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
