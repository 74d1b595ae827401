"""Where storage reports how it is doing, without knowing who listens.

storage never imports ``inboxd`` (imports point down), yet the program counts what happens
here (``inboxd.metrics``): it sets these hooks once at start-up. One slot per event, not a
list of listeners: a process has one metrics registry. Unset, a hook does nothing, and a
call costs what a call of an empty function costs.
"""

from __future__ import annotations

from collections.abc import Callable


def _ignore(background: bool, seconds: float) -> None:
    return None


# Called after each pool checkout: from the background (worker) pool or not, and how long
# getting the connection took (a wait, when every connection was busy).
pool_acquired: Callable[[bool, float], None] = _ignore
