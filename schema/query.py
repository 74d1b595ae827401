from __future__ import annotations

import strawberry

from resolvers import domain, inboxes, messages, sending
from resolvers.pagination import encode_cursor
from resolvers.validation import InputInvalid
from schema.checks import ConnectionTest, MailSettingsDiscovery
from schema.context import Info, bad_input, caller, unavailable
from schema.inputs import EmailInboxFilter
from schema.messages import Message, MessageConnection, MessageFilter, message_connection
from schema.oauth import OAuthQuery
from schema.pagination import page_info
from schema.sending import (
    OutgoingMessage,
    OutgoingMessageConnection,
    OutgoingMessageFilter,
    outgoing_connection,
)
from schema.types import (
    AuditEvent,
    AuditEventConnection,
    AuditEventEdge,
    EmailInbox,
    EmailInboxConnection,
    EmailInboxEdge,
    Viewer,
    WorkspaceInfo,
)
from storage.inbox_reads import InboxFilter
from storage.models import Permission


def _filter(flt: EmailInboxFilter | None) -> InboxFilter:
    if flt is None:
        return InboxFilter()
    return InboxFilter(
        search=flt.search or None,
        status=flt.status.value if flt.status else None,
        department=flt.department,
        tag=flt.tag,
        active=flt.active,
    )


@strawberry.type
class Query(OAuthQuery):
    @strawberry.field(description="One inbox of the caller's workspace, or null.")
    async def email_inbox(self, info: Info, id: strawberry.ID) -> EmailInbox | None:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        row = await inboxes.get_inbox(info.context.state, principal, id)
        return EmailInbox.from_row(row) if row else None

    @strawberry.field(description="The workspace's inboxes, oldest first, in pages.")
    async def email_inboxes(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        filter: EmailInboxFilter | None = None,
    ) -> EmailInboxConnection:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        try:
            page = await inboxes.list_inboxes(
                info.context.state, principal, first=first, after=after, flt=_filter(filter)
            )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        edges = [
            EmailInboxEdge(
                cursor=encode_cursor(row.created_at, row.id), node=EmailInbox.from_row(row)
            )
            for row in page.items
        ]
        return EmailInboxConnection(
            edges=edges,
            page_info=page_info([e.cursor for e in edges], page.has_next_page, after),
            total_count=page.total_count,
        )

    @strawberry.field(description="An inbox's received messages, newest first, in pages.")
    async def messages(
        self,
        info: Info,
        inbox_id: strawberry.ID,
        first: int = 20,
        after: str | None = None,
        filter: MessageFilter | None = None,
    ) -> MessageConnection:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        flt = (filter or MessageFilter()).stored()
        try:
            rows, has_next = await messages.list_messages(
                info.context.state, principal, inbox_id, first=first, after=after, flt=flt
            )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        return message_connection(rows, has_next, after)

    @strawberry.field(description="One received message of the caller's workspace, or null.")
    async def message(self, info: Info, id: strawberry.ID) -> Message | None:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        row = await messages.get_message(info.context.state, principal, id)
        return Message.from_row(row) if row else None

    @strawberry.field(description="An inbox's outbox: the messages it sent, newest first.")
    async def outgoing_messages(
        self,
        info: Info,
        inbox_id: strawberry.ID,
        first: int = 20,
        after: str | None = None,
        filter: OutgoingMessageFilter | None = None,
    ) -> OutgoingMessageConnection:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        state = filter.state.value if filter is not None and filter.state is not None else None
        try:
            rows, has_next = await sending.list_outgoing(
                info.context.state,
                principal,
                inbox_id,
                first=first,
                after=after,
                outgoing_state=state,
            )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        return outgoing_connection(rows, has_next, after)

    @strawberry.field(description="One outgoing message of the caller's workspace, or null.")
    async def outgoing_message(self, info: Info, id: strawberry.ID) -> OutgoingMessage | None:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        row = await sending.get_outgoing(info.context.state, principal, id)
        return OutgoingMessage.from_row(row) if row else None

    @strawberry.field(description="One connection test of the caller's workspace, or null.")
    async def connection_test(self, info: Info, id: strawberry.ID) -> ConnectionTest | None:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        row = await inboxes.get_test(info.context.state, principal, id)
        return ConnectionTest.from_row(row) if row else None

    @strawberry.field(
        description="Suggested SMTP and IMAP settings for an address: provider presets (by "
        "domain, then by MX host), then RFC 6186/8314 SRV records, then conventional names."
    )
    async def discover_mail_settings(self, info: Info, email: str) -> MailSettingsDiscovery:
        caller(info, Permission.VIEW_EMAIL_INBOX)
        try:
            found = await domain.discover(info.context.state, email)
        except InputInvalid as exc:
            raise bad_input(exc) from None
        except domain.DnsUnavailable as exc:
            raise unavailable(exc) from None
        return MailSettingsDiscovery.from_discovery(found)

    @strawberry.field(
        description="The workspace's audit trail, newest first (needs manage-email-inbox)."
    )
    async def audit_log(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        inbox_id: strawberry.ID | None = None,
    ) -> AuditEventConnection:
        principal = caller(info, Permission.MANAGE_EMAIL_INBOX)
        try:
            rows, has_next = await inboxes.audit_log(
                info.context.state, principal, first=first, after=after, inbox_id=inbox_id
            )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        edges = [
            AuditEventEdge(cursor=encode_cursor(r.at, r.id), node=AuditEvent.from_row(r))
            for r in rows
        ]
        return AuditEventConnection(
            edges=edges, page_info=page_info([e.cursor for e in edges], has_next, after)
        )

    @strawberry.field(description="Who is calling: workspace, permissions, inbox usage and limit.")
    async def viewer(self, info: Info) -> Viewer:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        result = await inboxes.viewer(info.context.state, principal)
        ws = result.workspace
        return Viewer(
            workspace=WorkspaceInfo(
                id=strawberry.ID(str(ws.id)),
                name=ws.name,
                max_inboxes=ws.max_inboxes,
                subscription_active=ws.subscription_active,
            ),
            permissions=result.permissions,
            inbox_usage=result.inbox_usage,
            inbox_limit=ws.max_inboxes,
        )
