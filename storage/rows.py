"""Rows as storage returns them: asyncpg ``Record``s, their columns readable as attributes.

An ORM builds an instrumented object per row (identity map, attribute state): for a page of
50 inboxes that costs more than the query. A ``Record`` is built in C; the subclasses below
(passed as ``record_class``) name its columns with their types, so mypy checks every use.
The annotations mirror ``storage.models``; a test keeps them in step.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from operator import itemgetter
from typing import Any

import asyncpg


class Row(asyncpg.Record):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Each declared column becomes a property reading the record's item: C all the way,
        # where a __getattr__ would run Python code for every attribute of every row.
        for name in cls.__annotations__:
            if not name.startswith("__"):
                setattr(cls, name, property(itemgetter(name)))


class InboxRow(Row):
    """An ``email_inbox`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    email: str
    display_name: str
    description: str | None
    sender_info: str | None
    department: str | None
    active: bool
    provider: str
    status: str
    status_reason: str | None
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_username: str
    smtp_password: bytes
    smtp_tls_certificate_sha256: str | None
    imap_host: str
    imap_port: int
    imap_security: str
    imap_username: str
    imap_password: bytes
    imap_tls_certificate_sha256: str | None
    daily_send_limit: int
    sending_enabled: bool
    signature: str | None
    tags: list[str]
    reply_to: str | None
    delete_message_policy: str
    notify_on_new_messages: bool
    notification_email: str | None
    receiving_enabled: bool
    receiving_folders: list[str]
    receiving_backfill_days: int
    sending_copy_to_sent_folder: bool | None
    time_zone: str | None
    dkim_selectors: list[str]
    setup_status: dict[str, Any] | None
    last_verified_at: datetime | None
    last_check_at: datetime | None
    error_count: int
    last_message_id: str | None
    auth_method: str
    oauth_provider: str | None
    oauth_managed: bool
    oauth_refresh_token: bytes | None
    oauth_access_token: bytes | None
    oauth_access_token_expires_at: datetime | None
    oauth_reauth_required_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class TestRow(Row):
    """A ``connection_test`` row, read-only."""

    __test__ = False  # not a pytest test class

    id: uuid.UUID
    inbox_id: uuid.UUID
    workspace_id: uuid.UUID
    state: str
    reason: str
    round_trip: bool
    round_trip_to: str | None
    inbox_version: int
    attempts: int
    run_after: datetime
    lease_expires_at: datetime | None
    worker_id: str | None
    smtp_result: dict[str, Any] | None
    imap_result: dict[str, Any] | None
    dns_result: dict[str, Any] | None
    round_trip_result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int


class WorkspaceRow(Row):
    """A ``workspace`` row, read-only."""

    id: uuid.UUID
    name: str
    max_inboxes: int
    subscription_active: bool
    created_at: datetime


class ApiKeyRow(Row):
    """An ``api_key`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    prefix: str
    key_hash: bytes
    permissions: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AuditRow(Row):
    """An ``audit_event`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID | None
    action: str
    api_key_prefix: str | None
    client_address: str | None
    details: dict[str, Any]
    at: datetime


class OAuthAppRow(Row):
    """An ``oauth_app`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    provider: str
    client_id: str
    client_secret: bytes
    tenant: str | None
    redirect_uri: str
    created_at: datetime
    updated_at: datetime


class OAuthStateRow(Row):
    """An ``oauth_state`` row, read-only."""

    id: uuid.UUID
    state_hash: bytes
    workspace_id: uuid.UUID
    provider: str
    code_verifier: bytes
    inbox_id: uuid.UUID | None
    email_hint: str | None
    inbox_settings: dict[str, Any] | None
    api_key_prefix: str | None
    client_address: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


def columns(table: Any) -> str:
    """The column list of a table model, for SELECTs that fill the rows above."""
    return ", ".join(table.__table__.columns.keys())
