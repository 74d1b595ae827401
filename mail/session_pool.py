"""Idle mail sessions kept for a short while for the next message of the same inbox.

The pool only keeps sessions: what is safe to do on one, and when one may be handed back,
is its user's decision (``mail.smtp_pool``, ``mail.sent_folder``). Guarantees:

- A session is keyed by its owner (an inbox) AND a fingerprint of where and as whom it is
  logged in (host, port, security, TLS pin, login kind, username, a keyed hash of the
  secret), so a changed password or a refreshed access token never gets an old session.
  The fingerprint is an HMAC under a key of this process: no secret, nor a plain hash of
  one, is kept or logged. Taking a session under a new fingerprint closes the owner's
  sessions under older ones.
- An idle session lives ``linger`` seconds (0: none is kept) and serves at most
  ``max_uses`` messages; one that is no longer alive is closed, never handed out.
- Idle sessions are closed by a task of the pool's own when their linger ends, and all of
  them on ``close`` (politely: QUIT, LOGOUT), after which nothing is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mail.endpoint import Endpoint

S = TypeVar("S")

# Per process: fingerprints are comparable within it and mean nothing outside it.
_FINGERPRINT_KEY = os.urandom(32)


def fingerprint(endpoint: Endpoint) -> str:
    """Where and as whom a session is logged in, without the secret in any recoverable form."""
    secret = endpoint.password.reveal()
    mac = hmac.new(_FINGERPRINT_KEY, digestmod=hashlib.sha256)
    for part in (
        endpoint.host.lower(),
        str(endpoint.port),
        endpoint.security.value,
        endpoint.tls_certificate_sha256 or "",
        endpoint.login.value,
        endpoint.username,
        secret,
    ):
        mac.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return mac.hexdigest()


@dataclass(frozen=True, slots=True)
class PoolLimits:
    linger: float = 5.0  # seconds an idle session is kept; 0 keeps none
    max_uses: int = 50  # messages one session serves before it is closed

    @property
    def keeps(self) -> bool:
        return self.linger > 0 and self.max_uses > 1


@dataclass(slots=True)
class _Idle(Generic[S]):
    session: S
    uses: int
    expires: float


class SessionPool(Generic[S]):
    """Idle sessions by (owner, fingerprint). ``alive`` says whether one can still be used;
    ``close`` ends one politely and never raises."""

    def __init__(
        self,
        limits: PoolLimits,
        alive: Callable[[S], bool],
        close: Callable[[S], Coroutine[Any, Any, None]],
        name: str,
    ) -> None:
        self.limits = limits
        self._alive = alive
        self._close = close
        self._name = name
        self._idle: dict[tuple[str, str], list[_Idle[S]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def take(self, owner: str, endpoint: Endpoint) -> tuple[S, int] | None:
        """An idle, live session of ``owner`` logged in as ``endpoint`` says, and how many
        messages it has served; None when there is none."""
        key = (owner, fingerprint(endpoint))
        for other in [k for k in self._idle if k[0] == owner and k != key]:
            for stale in self._idle.pop(other):  # the password or token changed
                self._close_soon(stale.session)
        kept = self._idle.get(key)
        while kept:
            idle = kept.pop()  # the most recently used: the likeliest to be alive
            if not kept:
                del self._idle[key]
            if self._alive(idle.session):
                return idle.session, idle.uses
            self._close_soon(idle.session)
        return None

    def give_back(self, owner: str, endpoint: Endpoint, session: S, uses: int) -> None:
        """Keep a session whose last transaction ended cleanly, for ``linger`` seconds;
        closed instead when the pool keeps none, it served ``max_uses`` or is not alive."""
        if (
            self._closed
            or not self.limits.keeps
            or uses >= self.limits.max_uses
            or not self._alive(session)
        ):
            self._close_soon(session)
            return
        expires = asyncio.get_running_loop().time() + self.limits.linger
        key = (owner, fingerprint(endpoint))
        self._idle.setdefault(key, []).append(_Idle(session, uses, expires))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name=f"{self._name}-reaper")

    def discard(self, session: S) -> None:
        """A session whose last transaction failed or whose outcome is unknown: closed."""
        self._close_soon(session)

    @property
    def idle_count(self) -> int:
        return sum(len(kept) for kept in self._idle.values())

    async def close(self) -> None:
        """Close every idle session (QUIT / LOGOUT) and keep none from now on."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle = [entry.session for kept in self._idle.values() for entry in kept]
        self._idle.clear()
        await asyncio.gather(*(self._close(session) for session in idle), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _close_soon(self, session: S) -> None:
        """Closed in a task of its own: the caller's message does not wait for a goodbye."""
        task = asyncio.create_task(self._close(session), name=f"{self._name}-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reap(self) -> None:
        """Close sessions whose linger ended; ends when none is idle."""
        loop = asyncio.get_running_loop()
        while self._idle:
            now = loop.time()
            for key in list(self._idle):
                kept = self._idle[key]
                expired = [e for e in kept if e.expires <= now]
                if expired:
                    kept[:] = [e for e in kept if e.expires > now]
                    if not kept:
                        del self._idle[key]
                    for entry in expired:
                        self._close_soon(entry.session)
            if not self._idle:
                return
            soonest = min(e.expires for kept in self._idle.values() for e in kept)
            # Sessions parked later expire later: sleeping until the soonest one is enough.
            await asyncio.sleep(max(0.0, soonest - loop.time()) + 0.01)
