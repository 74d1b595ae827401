"""The enums of the GraphQL contract, each over the Python enum the code uses."""

from __future__ import annotations

import strawberry

from mail import discovery, dns_checks, presets, results
from storage import models

InboxStatus = strawberry.enum(
    models.InboxStatus, description="Where an inbox's verification stands."
)
Provider = strawberry.enum(presets.Provider, description="Mail provider; CUSTOM for any other.")
Security = strawberry.enum(
    presets.Security,
    description="TLS: implicit TLS from the first byte (465, 993). STARTTLS: plain, then "
    "upgraded (587, 143). NONE: no encryption (only for servers on a trusted network).",
)
DeleteMessagePolicy = strawberry.enum(models.DeleteMessagePolicy)
ConnectionTestState = strawberry.enum(models.TestState, name="ConnectionTestState")
CheckState = strawberry.enum(
    dns_checks.CheckState,
    description="PASS: fine. WARN: works, should improve. FAIL: wrong, fix it. MISSING: no "
    "record. ERROR: DNS did not answer (timeout, SERVFAIL); says nothing about the record.",
)
ProbeCode = strawberry.enum(
    results.ProbeCode,
    description="What a probe found. TIMEOUT, CONNECTION_REFUSED and HOST_NOT_FOUND are "
    "retried automatically; every other failure needs a change to the inbox's settings.",
)
DiscoverySource = strawberry.enum(discovery.DiscoverySource)
AuthMethod = strawberry.enum(
    models.AuthMethod,
    description="PASSWORD: SMTP and IMAP logins with the stored passwords. OAUTH2: XOAUTH2 "
    "with an OAuth access token (Gmail, Microsoft 365).",
)
OAuthProvider = strawberry.enum(models.OAuthProvider, name="OAuthProvider")
