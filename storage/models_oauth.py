"""The OAuth tables: a workspace's OAuth apps and its authorizations in progress (the tokens
themselves are columns of ``email_inbox``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from storage.models import _now, _ts


class OAuthApp(SQLModel, table=True):
    """A workspace's OAuth client at one provider; the secret is encrypted, bound to its row."""

    __tablename__ = "oauth_app"
    __table_args__ = (
        Index("uq_oauth_app_workspace_provider", "workspace_id", "provider", unique=True),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    provider: str = Field(sa_column=Column(Text, nullable=False))
    client_id: str = Field(sa_column=Column(Text, nullable=False))
    client_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Microsoft Entra tenant (a GUID, a domain, "common" or "organizations"); None for Google.
    tenant: str | None = Field(default=None, sa_column=Column(Text))
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _now()
    updated_at: datetime = _now()


class OAuthState(SQLModel, table=True):
    """One authorization in progress: single use, expiring, bound to the workspace that
    started it. Only a hash of ``state`` is kept; the PKCE verifier is encrypted."""

    __tablename__ = "oauth_state"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    state_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    provider: str = Field(sa_column=Column(Text, nullable=False))
    code_verifier: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Reconnecting an existing inbox (its id stays, its messages too); None: a new inbox.
    inbox_id: uuid.UUID | None = Field(
        default=None, foreign_key="email_inbox.id", ondelete="CASCADE"
    )
    email_hint: str | None = Field(default=None, sa_column=Column(Text))
    # Server settings (``smtp``/``imap``, no credentials) replacing the provider's preset.
    inbox_settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    api_key_prefix: str | None = Field(default=None, sa_column=Column(Text))
    client_address: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _now()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = _ts()
