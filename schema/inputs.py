"""GraphQL inputs, and their conversion to the plain dicts resolvers take."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

import strawberry
from strawberry import UNSET

from schema.enums import DeleteMessagePolicy, InboxStatus, Provider, Security
from schema.messages import ReceivingInput
from schema.sending import SendingInput
from storage.secrets import Secret


def _secret(value: Any) -> Secret | None:
    return None if value is None else Secret(str(value))


# Input fields that hold a secret: from here on their value is a ``Secret``, revealed only by
# the encryption call (and by the probe that logs in).
SECRET_FIELDS = frozenset({"password", "client_secret", "access_token"})


# Each input class's field names, in order (``dataclasses.fields`` builds the list per call).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_PLAIN = frozenset({str, int, float, bool, type(None)})


def provided(value: Any) -> Any:
    """Input object -> dict of the fields the caller sent (snake_case), recursively; the
    value of a secret field (``SECRET_FIELDS``) as a ``Secret``."""
    if type(value) in _PLAIN:
        return value
    names = _FIELD_NAMES.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        given = {name: getattr(value, name) for name in names}
        return {
            name: _secret(v) if name in SECRET_FIELDS else provided(v)
            for name, v in given.items()
            if v is not UNSET
        }
    if isinstance(value, list):
        return [provided(v) for v in value]
    if hasattr(value, "value") and hasattr(type(value), "__members__"):
        return value.value
    return value


@strawberry.input(
    description="An OAuth 2.0 access token refreshed elsewhere: inboxd logs in with it "
    "(XOAUTH2) until expiresAt, then asks for a new one (it cannot refresh it)."
)
class OAuth2TokenInput:
    access_token: str = strawberry.field(description="Write-only.")
    expires_at: datetime


@strawberry.input(
    description="SMTP or IMAP server settings. Omitted port and security are "
    "inferred from each other (465/993 implicit TLS, 587/143 STARTTLS)."
)
class ServerInput:
    host: str | None = UNSET
    port: int | None = UNSET
    security: Security | None = UNSET  # type: ignore[valid-type]
    username: str | None = strawberry.field(
        default=UNSET, description="Defaults to the inbox's email address."
    )
    password: str | None = strawberry.field(
        default=UNSET, description="Write-only. Blank or omitted on update keeps the stored one."
    )
    tls_certificate_sha256: str | None = strawberry.field(
        default=UNSET,
        description="Trust exactly this certificate (SHA-256 fingerprint from a "
        "CERTIFICATE_UNTRUSTED result), for servers with a self-signed certificate.",
    )


@strawberry.input
class CreateEmailInboxInput:
    email: str
    name: str | None = strawberry.field(default=UNSET, description="Label; defaults to the email.")
    password: str | None = strawberry.field(
        default=UNSET,
        description="Shortcut: the password for both SMTP and IMAP, with a provider preset.",
    )
    display_name: str | None = strawberry.field(
        default=UNSET, description="Sender name; defaults to the email's local part."
    )
    description: str | None = UNSET
    sender_info: str | None = UNSET
    department: str | None = UNSET
    active: bool | None = UNSET
    provider: Provider | None = UNSET  # type: ignore[valid-type]
    smtp: ServerInput | None = UNSET
    imap: ServerInput | None = strawberry.field(
        default=UNSET,
        description="Omitted: the SMTP credentials are reused and the host comes from the "
        "provider preset or the SMTP host (smtp.example.com -> imap.example.com).",
    )
    daily_send_limit: int | None = strawberry.field(
        default=UNSET, description="Default 15; clamped to 1..50."
    )
    sending_enabled: bool | None = UNSET
    signature: str | None = UNSET
    tags: list[str] | None = UNSET
    reply_to: str | None = UNSET
    delete_message_policy: DeleteMessagePolicy | None = UNSET  # type: ignore[valid-type]
    notify_on_new_messages: bool | None = UNSET
    notification_email: str | None = UNSET
    dkim_selectors: list[str] | None = UNSET
    time_zone: str | None = strawberry.field(
        default=UNSET,
        description="An IANA time zone (Europe/Berlin): the daily send limit counts its days "
        "and resets at its midnight. null: UTC.",
    )
    sending: SendingInput | None = strawberry.field(
        default=UNSET, description="Sending settings: the Sent folder copy."
    )
    receiving: ReceivingInput | None = strawberry.field(
        default=UNSET, description="Receiving mail: on by default, INBOX, no backfill."
    )
    oauth2: OAuth2TokenInput | None = strawberry.field(
        default=UNSET,
        description="Instead of passwords: an externally managed OAuth access token (for "
        "tokens inboxd refreshes itself, use startOAuthConnection).",
    )


@strawberry.input(description="Only the fields sent are changed.")
class UpdateEmailInboxInput:
    email: str | None = UNSET
    name: str | None = UNSET
    display_name: str | None = UNSET
    description: str | None = UNSET
    sender_info: str | None = UNSET
    department: str | None = UNSET
    active: bool | None = UNSET
    provider: Provider | None = UNSET  # type: ignore[valid-type]
    smtp: ServerInput | None = UNSET
    imap: ServerInput | None = UNSET
    daily_send_limit: int | None = UNSET
    sending_enabled: bool | None = UNSET
    signature: str | None = UNSET
    tags: list[str] | None = UNSET
    reply_to: str | None = UNSET
    delete_message_policy: DeleteMessagePolicy | None = UNSET  # type: ignore[valid-type]
    notify_on_new_messages: bool | None = UNSET
    notification_email: str | None = UNSET
    dkim_selectors: list[str] | None = UNSET
    time_zone: str | None = strawberry.field(
        default=UNSET,
        description="An IANA time zone (Europe/Berlin): the daily send limit counts its days "
        "and resets at its midnight. null: UTC.",
    )
    sending: SendingInput | None = strawberry.field(
        default=UNSET, description="Sending settings: the Sent folder copy."
    )
    receiving: ReceivingInput | None = strawberry.field(
        default=UNSET, description="Receiving mail: on by default, INBOX, no backfill."
    )
    oauth2: OAuth2TokenInput | None = strawberry.field(
        default=UNSET,
        description="Instead of passwords: an externally managed OAuth access token (for "
        "tokens inboxd refreshes itself, use startOAuthConnection).",
    )


@strawberry.input
class EmailInboxFilter:
    search: str | None = strawberry.field(
        default=None, description="Substring of name, email or display name."
    )
    status: InboxStatus | None = None  # type: ignore[valid-type]
    department: str | None = None
    tag: str | None = None
    active: bool | None = None
