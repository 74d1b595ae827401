"""An inbox is described once per concern: the table (``storage.models.EmailInbox``), the
rows read on hot paths (``storage.rows.InboxRow``), the public read shape (GraphQL
``EmailInbox``) and the inputs that write it (``CreateEmailInboxInput``,
``UpdateEmailInboxInput``). This test keeps them in step: a column added to the table must be
read, shown (or listed below as internal, with the reason) and, if a user sets it, settable by
both inputs."""

from __future__ import annotations

from dataclasses import fields

from schema.inputs import CreateEmailInboxInput, ServerInput, UpdateEmailInboxInput
from schema.messages import InboxReceiving, ReceivingInput
from schema.oauth import InboxOAuth
from schema.sending import InboxSending, SendingInput
from schema.types import EmailInbox as PublicInbox
from schema.types import ServerSettings
from storage.models import EmailInbox
from storage.rows import InboxRow

SIDES = ("smtp", "imap")
# Columns no client reads directly, and why.
INTERNAL = {
    "workspace_id": "the key's workspace scopes every read; it is never shown",
    "smtp_password": "write-only: encrypted, never returned (hasPassword instead)",
    "imap_password": "write-only: encrypted, never returned (hasPassword instead)",
    "oauth_refresh_token": "write-only: encrypted, never returned",
    "oauth_access_token": "write-only: encrypted, never returned (oauth.accessTokenExpiresAt)",
}
# Columns that only inboxd writes (verification, bookkeeping), never an input.
MAINTAINED = {
    "id", "status", "status_reason", "setup_status", "last_verified_at", "last_check_at",
    "error_count", "last_message_id", "created_at", "updated_at", "version",
}  # fmt: skip
# The OAuth login: written by the oauth2 input (an external token) and by the OAuth callback
# and token refresh (startOAuthConnection), shown as authMethod and ``oauth``.
OAUTH_LOGIN = {
    "auth_method", "oauth_provider", "oauth_managed", "oauth_access_token_expires_at",
    "oauth_reauth_required_at",
}  # fmt: skip
# Fields of the public shape that are not a column of the table.
RELATIONS = {"connection_tests": "a page of the inbox's rows in connection_test"}
# Fields of ``receiving`` that are live status (inbox_watch, or a column shown above), not
# settings: every other field of it is a ``receiving_*`` column.
RECEIVING_STATUS = {
    "state": "inbox_watch.state, or DISABLED",
    "last_error": "inbox_watch.last_error_*",
    "idle_supported": "inbox_watch.idle_supported",
    "last_check_at": "the inbox's last_check_at column, shown again beside the status",
}
# Input fields that are not a column of their own, and what they write.
DERIVED_INPUTS = {
    "password": "the shared password: smtp_password and imap_password",
    "smtp": "smtp_* columns (ServerInput)",
    "imap": "imap_* columns (ServerInput)",
    "receiving": "receiving_* columns (ReceivingInput)",
    "sending": "sending_* columns (SendingInput)",
    "oauth2": "auth_method and the oauth_* columns: an externally managed access token",
}


def table_columns() -> set[str]:
    return set(EmailInbox.__table__.columns.keys())  # type: ignore[attr-defined]


def public_columns() -> set[str]:
    """The columns the public shape shows, its server sides flattened (smtp.host: smtp_host)."""
    shown = {f.name for f in fields(PublicInbox) if not f.name.startswith("_")}
    sides = {f.name for f in fields(ServerSettings)} - {"has_password"}
    flat = {f"{side}_{name}" for side in SIDES for name in sides if side in shown}
    receiving = {f.name for f in fields(InboxReceiving) if not f.name.startswith("_")}
    flat |= {f"receiving_{name}" for name in receiving - set(RECEIVING_STATUS)}
    flat |= {f"sending_{f.name}" for f in fields(InboxSending)}
    flat |= {f"oauth_{f.name}" for f in fields(InboxOAuth)}
    return (shown - set(SIDES) - set(RELATIONS) - {"receiving", "sending", "oauth"}) | flat


def input_columns(input_type: type) -> set[str]:
    names = {f.name for f in fields(input_type)}
    server = {f.name for f in fields(ServerInput)} - {"password"}
    flat = {f"{side}_{name}" for side in SIDES for name in server if side in names}
    if "receiving" in names:
        flat |= {f"receiving_{f.name}" for f in fields(ReceivingInput)}
    if "sending" in names:
        flat |= {f"sending_{f.name}" for f in fields(SendingInput)}
    return (names - set(DERIVED_INPUTS)) | flat


def test_hot_rows_read_every_column():
    declared = {k for k in InboxRow.__annotations__ if not k.startswith("__")}
    assert declared == table_columns()


def test_receiving_status_fields_are_not_settings():
    shown = {f.name for f in fields(InboxReceiving) if not f.name.startswith("_")}
    assert set(RECEIVING_STATUS) <= shown
    assert not {f"receiving_{name}" for name in RECEIVING_STATUS} & table_columns()


def test_every_column_is_shown_or_internal_for_a_reason():
    assert table_columns() - set(INTERNAL) == public_columns()
    assert not set(INTERNAL) & public_columns()


def test_what_users_set_both_inputs_set():
    settable = table_columns() - set(INTERNAL) - MAINTAINED - OAUTH_LOGIN
    assert input_columns(CreateEmailInboxInput) == settable
    assert input_columns(UpdateEmailInboxInput) == settable
    derived = {f.name for f in fields(CreateEmailInboxInput)} & set(DERIVED_INPUTS)
    assert derived == set(DERIVED_INPUTS)
