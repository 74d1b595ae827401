"""An inbox's state change, written once.

Every write to an existing ``email_inbox`` row is built by ``change``: whatever the caller sets,
the row's ``version`` goes up by one and ``updated_at`` becomes the transaction's ``now()``,
and the statement that writes it also announces it (``events.announce_sql``), so a change is
never committed without its event nor announced without being committed. Creation (version 1,
``CREATED``) and deletion (``delete``: the event carries version + 1) are the two ends.

One write is not a change of the inbox: ``reencrypt`` puts the same passwords under a newer
key. Nothing a client reads differs, so the version, ``updated_at`` and subscribers are left
alone (an ``updateEmailInbox`` with ``expectedVersion`` never conflicts with a key rotation).
Nor are the live counters the receiver keeps (``counters``: ``last_check_at``,
``last_message_id``, ``error_count``), written on every check of a mailbox: each message is
announced as MESSAGE_RECEIVED already, and a version and STATUS_CHANGED per poll would be noise
to subscribers and a conflict for every ``expectedVersion``.

A change is SQL text for a data-modifying CTE, so the callers (update, setup status, the
worker's claim, outcome and requeue, key rotation, the receiver's checks) each keep their one
statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from storage.events import EventKind, announce_sql

# What an announcement reads of each changed inbox.
ANNOUNCED = "i.id, i.workspace_id, i.version, i.status"


@dataclass(frozen=True, slots=True)
class InboxChange:
    """``cte``: ``name AS (UPDATE email_inbox ...)``, for a ``WITH``; ``notify``: a SELECT
    sending its events, to join (``UNION ALL``) the statement's other notifications."""

    name: str
    cte: str
    notify: str


def change(
    name: str,
    assignments: str,
    *,
    where: str,
    source: str | None = None,
    returning: str = ANNOUNCED,
    announce: Sequence[EventKind] = (EventKind.STATUS_CHANGED,),
) -> InboxChange:
    """The UPDATE of the inboxes ``where`` selects (alias ``i``; ``source`` is a FROM list),
    setting ``assignments`` (SQL, values as parameters) and the version and timestamp, and
    announcing each kind of ``announce`` for every row changed. ``returning`` must include
    ``ANNOUNCED``'s columns."""
    from_ = f" FROM {source}" if source else ""
    update = (
        f"UPDATE email_inbox AS i SET {assignments}, version = i.version + 1, "  # noqa: S608
        f"updated_at = now(){from_} WHERE {where} RETURNING {returning}"
    )
    notify = " UNION ALL ".join(announce_sql(kind, name) for kind in announce)
    return InboxChange(name, f"{name} AS ({update})", notify)


def delete(name: str, *, where: str) -> InboxChange:
    """The DELETE of the inboxes ``where`` selects (alias ``i``), announced as DELETED with
    the version after their last."""
    remove = (
        f"DELETE FROM email_inbox AS i WHERE {where} "  # noqa: S608
        "RETURNING i.id, i.workspace_id, i.version + 1 AS version, i.status"
    )
    return InboxChange(name, f"{name} AS ({remove})", announce_sql(EventKind.DELETED, name))


def reencrypt(source: str, secret_columns: Sequence[str]) -> str:
    """The UPDATE giving inboxes new ciphertexts of the same secrets: ``source`` is a FROM
    item ``r(id, <secret_columns>)``. Returns the number of rows written."""
    assignments = ", ".join(f"{column} = r.{column}" for column in secret_columns)
    return (
        f"WITH written AS (UPDATE email_inbox AS i SET {assignments} "  # noqa: S608
        f"FROM {source} WHERE i.id = r.id RETURNING 1) SELECT count(*) FROM written"
    )


# What ``tokens`` may write: a refreshed OAuth access token (and the refresh token the
# provider rotated), never settings or status.
TOKEN_COLUMNS = frozenset(
    {"oauth_access_token", "oauth_access_token_expires_at", "oauth_refresh_token"}
)


def tokens(name: str, values: Mapping[str, str], *, where: str, returning: str) -> str:
    """``name AS (UPDATE email_inbox ...)``, for a ``WITH``: the inbox ``where`` selects
    (alias ``i``) gets ``values`` (column: SQL expression) of ``TOKEN_COLUMNS`` only.

    Like ``reencrypt``, not a change of the inbox: a refreshed token alters nothing a user
    set, and a version per refresh would restart the receiver's session every hour and
    conflict with every ``expectedVersion``. Anything else raises ValueError."""
    others = sorted(set(values) - TOKEN_COLUMNS)
    if others or not values:
        raise ValueError(f"tokens() writes only {sorted(TOKEN_COLUMNS)}, not {others}")
    assignments = ", ".join(f"{column} = {value}" for column, value in sorted(values.items()))
    return (
        f"{name} AS (UPDATE email_inbox AS i SET {assignments} "  # noqa: S608
        f"WHERE {where} RETURNING {returning})"
    )


# What ``counters`` may write: the receiver's record of its checks, never settings or status.
COUNTER_COLUMNS = frozenset({"last_check_at", "last_message_id", "error_count"})


def counters(
    name: str,
    values: Mapping[str, str],
    *,
    where: str,
    source: str | None = None,
    returning: str = "i.id",
) -> str:
    """``name AS (UPDATE email_inbox ...)``, for a ``WITH``: the inboxes ``where`` selects
    (alias ``i``; ``source`` is a FROM list) get ``values`` (column: SQL expression) of
    ``COUNTER_COLUMNS`` only. No version, no ``updated_at``, no event: see the module's
    docstring. Anything else raises ValueError, so a change cannot slip through here."""
    others = sorted(set(values) - COUNTER_COLUMNS)
    if others or not values:
        raise ValueError(f"counters() writes only {sorted(COUNTER_COLUMNS)}, not {others}")
    assignments = ", ".join(f"{column} = {value}" for column, value in sorted(values.items()))
    from_ = f" FROM {source}" if source else ""
    return (
        f"{name} AS (UPDATE email_inbox AS i SET {assignments}{from_} "  # noqa: S608
        f"WHERE {where} RETURNING {returning})"
    )


def statement(inbox: InboxChange, *, result: str, also_notify: Sequence[str] = ()) -> str:
    """A whole statement of one change: ``WITH <change>, notified AS (<its events>, then
    also_notify's) SELECT <result> FROM <change>``, the events sent once per statement."""
    notify = " UNION ALL ".join([inbox.notify, *also_notify])
    return (
        f"WITH {inbox.cte}, notified AS ({notify}) "  # noqa: S608
        f"SELECT {result} FROM {inbox.name}, (SELECT count(*) FROM notified) AS sent"
    )
