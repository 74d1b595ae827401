from __future__ import annotations

from typing import Annotated

import strawberry

from resolvers import domain, inboxes, messages, sending
from resolvers.inboxes import InboxWrite
from schema.checks import ConnectionTest
from schema.context import Info, unavailable
from schema.errors import (
    DuplicateEmailInbox,
    FieldError,
    InboxLimitReached,
    NotFound,
    RateLimited,
    SubscriptionRequired,
    ValidationError,
    VersionConflict,
)
from schema.inputs import CreateEmailInboxInput, UpdateEmailInboxInput, provided
from schema.messages import Message
from schema.mutating import mutate
from schema.oauth import OAuthMutation
from schema.sending import (
    CancelEmailPayload,
    CancelEmailSuccess,
    OutgoingMessage,
    SendEmailInput,
    SendEmailPayload,
    SendEmailSuccess,
    sending_error,
)
from schema.types import EmailInbox


@strawberry.type
class CreateEmailInboxSuccess:
    inbox: EmailInbox
    warnings: list[FieldError] = strawberry.field(
        description="Values that were adjusted, e.g. a clamped dailySendLimit."
    )


@strawberry.type
class UpdateEmailInboxSuccess:
    inbox: EmailInbox
    warnings: list[FieldError]


@strawberry.type
class DeleteEmailInboxSuccess:
    id: strawberry.ID


CreateEmailInboxPayload = Annotated[
    CreateEmailInboxSuccess
    | ValidationError
    | DuplicateEmailInbox
    | InboxLimitReached
    | SubscriptionRequired,
    strawberry.union("CreateEmailInboxPayload"),
]
UpdateEmailInboxPayload = Annotated[
    UpdateEmailInboxSuccess | ValidationError | DuplicateEmailInbox | NotFound | VersionConflict,
    strawberry.union("UpdateEmailInboxPayload"),
]


@strawberry.type
class TestConnectionSuccess:
    connection_test: ConnectionTest


TestConnectionPayload = Annotated[
    TestConnectionSuccess | ValidationError | NotFound | RateLimited,
    strawberry.union("TestConnectionPayload"),
]


@strawberry.type
class CheckDomainSetupSuccess:
    inbox: EmailInbox


CheckDomainSetupPayload = Annotated[
    CheckDomainSetupSuccess | ValidationError | NotFound,
    strawberry.union("CheckDomainSetupPayload"),
]
DeleteEmailInboxPayload = Annotated[
    DeleteEmailInboxSuccess | ValidationError | NotFound,
    strawberry.union("DeleteEmailInboxPayload"),
]


@strawberry.type
class SetMessageFlagsSuccess:
    # Not `message`: it would clash with UserError.message in a query of the union.
    received_message: Message = strawberry.field(description="The message, flags as set.")


SetMessageFlagsPayload = Annotated[
    SetMessageFlagsSuccess | ValidationError | NotFound,
    strawberry.union("SetMessageFlagsPayload"),
]


@strawberry.type
class DeleteMessageSuccess:
    id: strawberry.ID


DeleteMessagePayload = Annotated[
    DeleteMessageSuccess | ValidationError | NotFound,
    strawberry.union("DeleteMessagePayload"),
]


def _warnings(write: InboxWrite) -> list[FieldError]:
    return [FieldError.from_issue(w) for w in write.warnings]


async def _queue_test(
    info: Info, id: strawberry.ID, *, round_trip: bool, to: str | None = None
) -> TestConnectionPayload:
    """testConnection and sendTestEmail: both queue a connection test of the inbox."""
    return await mutate(
        info,
        lambda c: inboxes.test_connection(
            c.state, c.principal, id, round_trip=round_trip, to=to, client_address=c.client_address
        ),
        lambda test: TestConnectionSuccess(connection_test=ConnectionTest.from_row(test)),
    )


@strawberry.type
class Mutation(OAuthMutation):
    @strawberry.mutation(
        description="Store an inbox (credentials encrypted) and queue its verification."
    )
    async def create_email_inbox(
        self, info: Info, input: CreateEmailInboxInput
    ) -> CreateEmailInboxPayload:
        return await mutate(
            info,
            lambda c: inboxes.create_inbox(
                c.state, c.principal, provided(input), client_address=c.client_address
            ),
            lambda write: CreateEmailInboxSuccess(
                inbox=EmailInbox.from_row(write.inbox), warnings=_warnings(write)
            ),
        )

    @strawberry.mutation(description="Change some fields; connection changes re-verify.")
    async def update_email_inbox(
        self,
        info: Info,
        id: strawberry.ID,
        input: UpdateEmailInboxInput,
        expected_version: int | None = None,
    ) -> UpdateEmailInboxPayload:
        return await mutate(
            info,
            lambda c: inboxes.update_inbox(
                c.state,
                c.principal,
                id,
                provided(input),
                expected_version,
                client_address=c.client_address,
            ),
            lambda write: UpdateEmailInboxSuccess(
                inbox=EmailInbox.from_row(write.inbox), warnings=_warnings(write)
            ),
        )

    @strawberry.mutation(description="Delete an inbox and its stored credentials.")
    async def delete_email_inbox(self, info: Info, id: strawberry.ID) -> DeleteEmailInboxPayload:
        return await mutate(
            info,
            lambda c: inboxes.delete_inbox(
                c.state, c.principal, id, client_address=c.client_address
            ),
            lambda deleted: DeleteEmailInboxSuccess(id=strawberry.ID(str(deleted))),
        )

    @strawberry.mutation(
        description="Verify the inbox's SMTP and IMAP settings again (and, with roundTrip, send "
        "itself a message and wait for it over IMAP). Returns the queued test, or the one "
        "already queued or running."
    )
    async def test_connection(
        self, info: Info, id: strawberry.ID, round_trip: bool = False
    ) -> TestConnectionPayload:
        return await _queue_test(info, id, round_trip=round_trip)

    @strawberry.mutation(
        description="Send a real test message through the inbox's SMTP, to `to` or (default) "
        "the inbox itself; sent to itself, it is awaited over IMAP and then deleted. Runs as a "
        "connection test: follow it with the `connectionTest` subscription."
    )
    async def send_test_email(
        self, info: Info, id: strawberry.ID, to: str | None = None
    ) -> TestConnectionPayload:
        return await _queue_test(info, id, round_trip=True, to=to)

    @strawberry.mutation(
        description="Check the inbox domain's MX, SPF, DKIM and DMARC records again, now."
    )
    async def check_domain_setup(self, info: Info, id: strawberry.ID) -> CheckDomainSetupPayload:
        try:
            return await mutate(
                info,
                lambda c: domain.check_domain_setup(
                    c.state, c.principal, id, client_address=c.client_address
                ),
                lambda row: CheckDomainSetupSuccess(inbox=EmailInbox.from_row(row)),
            )
        except domain.DnsUnavailable as exc:
            raise unavailable(exc) from None

    @strawberry.mutation(
        description="Set a received message's \\Seen and \\Flagged (a flag left null stays as "
        "it is): at once in inboxd, and on the IMAP server as soon as the inbox's watcher can "
        "(retried until it succeeds; applied while the inbox is watched)."
    )
    async def set_message_flags(
        self,
        info: Info,
        id: strawberry.ID,
        seen: bool | None = None,
        flagged: bool | None = None,
    ) -> SetMessageFlagsPayload:
        return await mutate(
            info,
            lambda c: messages.set_message_flags(
                c.state,
                c.principal,
                id,
                seen=seen,
                flagged=flagged,
                client_address=c.client_address,
            ),
            lambda row: SetMessageFlagsSuccess(received_message=Message.from_row(row)),
        )

    @strawberry.mutation(
        description="Delete a received message in inboxd; it is never imported again. Under "
        "the inbox's DELETE_WHEN_DELETED policy it is deleted on the IMAP server too (as "
        "setMessageFlags is carried there); otherwise the server keeps it."
    )
    async def delete_message(self, info: Info, id: strawberry.ID) -> DeleteMessagePayload:
        return await mutate(
            info,
            lambda c: messages.delete_message(
                c.state, c.principal, id, client_address=c.client_address
            ),
            lambda deleted: DeleteMessageSuccess(id=strawberry.ID(str(deleted))),
        )

    @strawberry.mutation(
        description="Queue a message for sending through the inbox's SMTP server, counted "
        "against its dailySendLimit (per UTC day). Follow it with the `outgoingMessage` "
        "subscription: QUEUED, SENDING, then SENT or FAILED; transient failures are retried."
    )
    async def send_email(
        self, info: Info, inbox_id: strawberry.ID, input: SendEmailInput
    ) -> SendEmailPayload:
        return await mutate(
            info,
            lambda c: sending.send_email(
                c.state, c.principal, inbox_id, provided(input), client_address=c.client_address
            ),
            lambda row: SendEmailSuccess(outgoing_message=OutgoingMessage.from_row(row)),
            errors=sending_error,
        )

    @strawberry.mutation(
        description="Cancel a QUEUED message (its place in the day's count is given back)."
    )
    async def cancel_email(self, info: Info, id: strawberry.ID) -> CancelEmailPayload:
        return await mutate(
            info,
            lambda c: sending.cancel_email(
                c.state, c.principal, id, client_address=c.client_address
            ),
            lambda row: CancelEmailSuccess(outgoing_message=OutgoingMessage.from_row(row)),
            errors=sending_error,
        )
