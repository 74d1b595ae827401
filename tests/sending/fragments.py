"""GraphQL documents of the sending tests."""

OUTGOING_FIELDS = """
    id inboxId state messageId subject text html headers attempts
    to { name address } cc { address } bcc { address }
    attachments { filename contentType size }
    replyToMessageId inReplyTo references sendAt nextAttemptAt
    lastCode lastReply lastHint refusedRecipients { address reply }
    sentAt sentFolder createdAt version
"""
SEND = f"""
mutation($inboxId: ID!, $input: SendEmailInput!) {{
  sendEmail(inboxId: $inboxId, input: $input) {{
    __typename
    ... on SendEmailSuccess {{ outgoingMessage {{ {OUTGOING_FIELDS} }} }}
    ... on ValidationError {{ code message fields {{ field message }} }}
    ... on DailySendLimitReached {{ code message limit resetsAt }}
    ... on InboxNotActive {{ code message inboxId }}
    ... on RateLimited {{ code message retryAfterSeconds }}
    ... on NotFound {{ code message id }}
  }}
}}"""
CANCEL = f"""
mutation($id: ID!) {{
  cancelEmail(id: $id) {{
    __typename
    ... on CancelEmailSuccess {{ outgoingMessage {{ {OUTGOING_FIELDS} }} }}
    ... on NotCancellable {{ code message state }}
    ... on NotFound {{ code message }}
    ... on ValidationError {{ code fields {{ field message }} }}
  }}
}}"""
LIST = """
query($inboxId: ID!, $first: Int!, $after: String, $filter: OutgoingMessageFilter) {
  outgoingMessages(inboxId: $inboxId, first: $first, after: $after, filter: $filter) {
    edges { cursor node { id state subject } }
    pageInfo { hasNextPage endCursor }
  }
}"""
GET = f"query($id: ID!) {{ outgoingMessage(id: $id) {{ {OUTGOING_FIELDS} }} }}"
FOLLOW = (
    "subscription($id: ID!) { outgoingMessage(id: $id) { id state version lastCode "
    "lastReply lastHint attempts sentAt } }"
)
EVENTS = (
    "subscription { emailInboxEvents { kind inboxId version outgoingMessageId outgoingState } }"
)
AUDIT = """
query($inboxId: ID) { auditLog(first: 50, inboxId: $inboxId) { edges { node { action details } } } }
"""
