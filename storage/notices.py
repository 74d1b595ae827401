"""Notices of new mail (the help-desk account's ``notifyOnNewMessages``): a short message to
the inbox's ``notificationEmail`` for each message it receives, queued in the outbox.

The notice is queued by the statement that stores the message (``storage.messages``), as
three more CTEs of it: a message is stored once, so it notifies once, and a crash can lose
neither; the statement count per stored message stays one. Its idempotency key,
``new-message:<message id>``, says the same in the outbox's own terms.

A notice is From the inbox itself, To ``notificationEmail``, with the subject
``New message: <subject>`` and a text naming the sender, subject and time received, never the
message's body. It counts against the inbox's daily send limit (a day of its time zone, as
``sendEmail`` counts): a notice over the limit is not queued (``outcome`` says DROPPED, and
the caller logs it) while the message is stored all the same. None is sent for a message from
the inbox's own address (a notice arriving back would notify again), nor for one dated more
than a day before it arrived (a backfill of old mail), nor while the inbox's sending is off.
"""

from __future__ import annotations

from storage.outbox import OUTGOING_COLUMNS

KEY_PREFIX = "new-message:"
MAX_SUBJECT = 200
# The names the statement's other parts read.
WANTED = "notice_wanted"
NOTICED = "noticed"
HEADERS = '{"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}'
# A Message-ID at the inbox's domain when it is a plain ASCII one (else inboxd.invalid, as
# mail.compose.make_message_id does).
_DOMAIN = "substring(w.email from '@([^@]*)$')"
_MESSAGE_ID = (
    "'<' || replace(gen_random_uuid()::text, '-', '') || '@' || "
    f"CASE WHEN {_DOMAIN} ~ '^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$' "
    f"THEN lower({_DOMAIN}) ELSE 'inboxd.invalid' END || '>'"
)


def notice_sql(
    *, held: str, stored: str, subject: str, sender: str, sent_at: str, day: str, received_at: str
) -> str:
    """CTEs (``notice_wanted``, ``notice_counted``, ``noticed``) queueing the notice of the
    message ``stored`` (columns id, inbox_id) of the inbox ``held`` (its email_inbox columns);
    ``subject``, ``sender`` (jsonb {name, address}) and ``sent_at`` are the message's, as SQL
    expressions; ``day`` (date) and ``received_at`` (text) are now in the inbox's time zone,
    computed by the caller with zoneinfo: Postgres's own zone data may be older (an embedded
    Postgres did not know America/Coyhaique), and an unknown zone would fail the statement
    that stores the message."""
    zone = "coalesce(w.time_zone, 'UTC')"
    one_line = f"regexp_replace(coalesce({subject}, ''), '[[:cntrl:]]+', ' ', 'g')"
    shown_subject = f"coalesce(nullif(left(trim({one_line}), {MAX_SUBJECT}), ''), '(no subject)')"
    address = f"(({sender})::jsonb ->> 'address')"
    name = f"nullif(trim(({sender})::jsonb ->> 'name'), '')"
    shown_sender = f"coalesce({name} || ' <' || {address} || '>', {address}, '(unknown)')"
    received = f"{received_at} || ' ' || {zone}"
    text = (
        f"'A new message arrived in ' || w.email || '.' || chr(10) || chr(10) || "
        f"'From: ' || {shown_sender} || chr(10) || "
        f"'Subject: ' || {shown_subject} || chr(10) || "
        f"'Received: ' || {received} || chr(10) || chr(10) || "
        "'Read it with the message query, id ' || w.message_id || '.' || chr(10)"
    )
    return f"""
    {WANTED} AS (
        SELECT h.id AS inbox_id, h.workspace_id, h.email, h.notification_email, h.time_zone,
               h.daily_send_limit, s.id AS message_id,
               {day} AS day
          FROM {held} h, {stored} s
         WHERE h.notify_on_new_messages AND h.notification_email IS NOT NULL
           AND h.sending_enabled AND h.active
           AND lower(coalesce({address}, '')) <> lower(h.email)
           AND coalesce({sent_at}, now()) > now() - interval '1 day'
    ), notice_counted AS (
        INSERT INTO send_count AS c (inbox_id, day, count)
        SELECT inbox_id, day, 1 FROM {WANTED}
        ON CONFLICT (inbox_id, day) DO UPDATE SET count = c.count + 1
         WHERE c.count < (SELECT daily_send_limit FROM {WANTED})
        RETURNING c.inbox_id
    ), {NOTICED} AS (
        INSERT INTO outgoing_message (
            id, workspace_id, inbox_id, state, to_addresses, cc_addresses, bcc_addresses,
            subject, text_body, html_body, headers, attachments, reply_to_message_id,
            in_reply_to, reference_ids, message_id, idempotency_key, send_at, count_day,
            attempts, next_attempt_at, refused, created_at, updated_at, version)
        SELECT gen_random_uuid(), w.workspace_id, w.inbox_id, 'QUEUED',
               jsonb_build_array(jsonb_build_object('name', NULL, 'address',
                                                    w.notification_email)),
               '[]'::jsonb, '[]'::jsonb, 'New message: ' || {shown_subject}, {text}, NULL,
               '{HEADERS}'::jsonb, '[]'::jsonb, NULL, NULL, '{{}}'::text[], {_MESSAGE_ID},
               '{KEY_PREFIX}' || w.message_id, NULL, w.day, 0, now(), '{{}}'::jsonb, now(),
               now(), 1
          FROM {WANTED} w, notice_counted
        ON CONFLICT (inbox_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {OUTGOING_COLUMNS}
    )"""  # noqa: S608


# QUEUED: a notice was queued; DROPPED: one was due but the daily limit is reached; NULL: none.
OUTCOME_SQL = (
    f"CASE WHEN EXISTS (SELECT 1 FROM {NOTICED}) THEN 'QUEUED' "  # noqa: S608
    f"WHEN EXISTS (SELECT 1 FROM {WANTED}) THEN 'DROPPED' END"
)
