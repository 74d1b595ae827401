"""What resolvers need from the running program, assembled once by ``inboxd.app``."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mail.dns_lookup import DnsSettings
from resolvers.oauth_client import OAuthConfig
from storage.attachments import AttachmentLinks
from storage.db import Database
from storage.listener import EventHub
from storage.recent_messages import RecentlyStored
from storage.secrets import KeyRing


@dataclass(frozen=True, slots=True)
class SendLimits:
    """``INBOXD_SEND_*`` settings the API applies (the worker's are in its own config)."""

    max_recipients: int = 50
    max_message_bytes: int = 10 * 1024 * 1024
    # sendEmail per inbox per minute, counted in Postgres; 0: no limit.
    per_inbox_per_minute: int = 60


@dataclass(slots=True)
class AppState:
    db: Database
    keyring: KeyRing
    max_page_size: int = 100
    api_key_touch_interval: timedelta = timedelta(seconds=60)
    # The process's LISTEN hub; subscriptions need it, plain queries and mutations do not.
    hub: EventHub | None = None
    # Where DNS questions go (domain checks, discovery); None: DNS checks are off.
    dns: DnsSettings | None = None
    # INBOXD_ALLOW_PRIVATE_HOSTS: also accept addresses on internal domains (.test, .local).
    allow_private_hosts: bool = False
    # Minimum time between logins to the same account (see storage.jobs.spaced_start).
    verification_spacing: timedelta = timedelta(0)
    # testConnection/sendTestEmail per inbox per minute; 0 means no limit.
    tests_per_inbox_per_minute: int = 0
    # sendEmail's limits (INBOXD_SEND_*).
    sending: SendLimits = field(default_factory=SendLimits)
    # Signs attachments' downloadUrl; set by inboxd.app from the settings (None: no links).
    attachment_links: AttachmentLinks | None = None
    # OAuth providers' endpoints and limits (INBOXD_OAUTH_*).
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    # Reads shared by every subscriber of one inbox after one event (see inboxes.read_shared).
    shared_reads: dict[tuple[uuid.UUID, uuid.UUID, int], asyncio.Future[Any]] = field(
        default_factory=dict
    )
    # Messages this process's receiver just stored, for its messageReceived subscribers.
    recently_stored: RecentlyStored = field(default_factory=RecentlyStored)

    def wake_local_workers(self) -> None:
        """Work was queued and committed: this process's own workers claim it now, not once
        the database's notification has come back round (which still wakes every other
        process's, and these again, finding nothing)."""
        if self.hub is not None:
            self.hub.wake_workers()
