INBOX_FIELDS = """
  id name email displayName description senderInfo department active provider status
  statusReason dailySendLimit sendingEnabled signature tags replyTo deleteMessagePolicy
  notifyOnNewMessages notificationEmail timeZone sending { copyToSentFolder } dkimSelectors
  setupStatus { overall } lastVerifiedAt
  lastCheckAt
  errorCount lastMessageId createdAt updatedAt version
  smtp { host port security username hasPassword tlsCertificateSha256 }
  imap { host port security username hasPassword tlsCertificateSha256 }
"""

COMMON = """
  ... on UserError { code message }
  ... on ValidationError { fields { field message } }
"""
DUPLICATE = "... on DuplicateEmailInbox { email existingId }"
LIMIT = "... on InboxLimitReached { currentUsage maxInboxes requested }"
NOT_FOUND = "... on NotFound { id }"

CREATE = """
mutation Create($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) {
    __typename
    ... on CreateEmailInboxSuccess { inbox { %s } warnings { field message } }
    %s
  }
}""" % (INBOX_FIELDS, COMMON + DUPLICATE + LIMIT)

UPDATE = """
mutation Update($id: ID!, $input: UpdateEmailInboxInput!, $expectedVersion: Int) {
  updateEmailInbox(id: $id, input: $input, expectedVersion: $expectedVersion) {
    __typename
    ... on UpdateEmailInboxSuccess { inbox { %s } warnings { field message } }
    ... on VersionConflict { expectedVersion currentVersion }
    %s
  }
}""" % (INBOX_FIELDS, COMMON + DUPLICATE + NOT_FOUND)

DELETE = """
mutation Delete($id: ID!) {
  deleteEmailInbox(id: $id) { __typename ... on DeleteEmailInboxSuccess { id } %s }
}""" % (COMMON + NOT_FOUND)

GET = "query Get($id: ID!) { emailInbox(id: $id) { %s } }" % INBOX_FIELDS

LIST = """
query List($first: Int!, $after: String, $filter: EmailInboxFilter) {
  emailInboxes(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id email name status department tags active } }
  }
}"""


def minimal_input(email: str = "sarah@example.com", **extra: object) -> dict[str, object]:
    return {
        "email": email,
        "smtp": {"host": "smtp.example.com", "port": 587, "password": "app-password-1"},
        **extra,
    }
