"""An outbox row (or a ``sendEmail`` input) as the message ``mail.compose`` builds: the
inbox's address and name in From, its signature, the stored Message-ID and threading.

Shared by ``sendEmail`` (which composes once to check the message, its size included, before
queueing it) and the sending worker (which composes it for the SMTP transaction)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from mail.compose import MailAttachment, Outgoing
from mail.markup import html_to_text
from mail.presets import Provider
from storage.outbox import NewOutgoing, OutgoingRow
from storage.rows import InboxRow

# Providers that file a copy of what their SMTP accepts in the Sent folder themselves: an
# APPEND from inboxd would make a second copy.
FILES_SENT_MAIL_ITSELF = frozenset({Provider.GMAIL, Provider.OFFICE365, Provider.OUTLOOK})


def files_sent_mail_itself(provider: str) -> bool:
    return provider in FILES_SENT_MAIL_ITSELF


def copies_to_sent_folder(inbox: InboxRow) -> bool:
    """Whether inboxd files a copy of the inbox's sent mail: the user's choice
    (``sending.copyToSentFolder``) if made, else unless the provider files it itself."""
    if inbox.sending_copy_to_sent_folder is not None:
        return inbox.sending_copy_to_sent_folder
    return not files_sent_mail_itself(inbox.provider)


def message_id_domain(inbox: InboxRow) -> str:
    return inbox.email.rpartition("@")[2]


# Remembered per signature (up to 1,024: an inbox's every message carries its signature, and
# the conversion parses HTML); at most 20,000 characters each, so at most ~40 MB, usually <1 MB.
@functools.lru_cache(maxsize=1024)
def signature_text(signature_html: str | None) -> str | None:
    """The (sanitised HTML) signature as plain text, for the text part."""
    if not signature_html:
        return None
    return html_to_text(signature_html).strip() or None


def _pairs(addresses: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(a.get("name"), a["address"]) for a in addresses]


def _outgoing(
    inbox: InboxRow, fields: dict[str, Any], attachments: list[MailAttachment], date: datetime
) -> Outgoing:
    return Outgoing(
        from_address=inbox.email,
        from_name=inbox.display_name or inbox.sender_info,
        signature_text=signature_text(inbox.signature),
        signature_html=inbox.signature,
        attachments=attachments,
        date=date,
        **fields,
    )


def outgoing_from_new(
    inbox: InboxRow, new: NewOutgoing, message_id: str, date: datetime
) -> Outgoing:
    fields = {
        "to": _pairs(new.to),
        "cc": _pairs(new.cc),
        "bcc": _pairs(new.bcc),
        "subject": new.subject,
        "text": new.text,
        "html": new.html,
        "in_reply_to": new.in_reply_to,
        "references": list(new.references),
        "headers": dict(new.headers),
        "message_id": message_id,
    }
    files = [MailAttachment(a.filename, a.content_type, a.content) for a in new.attachments]
    return _outgoing(inbox, fields, files, date)


def outgoing_from_row(
    inbox: InboxRow, row: OutgoingRow, contents: list[bytes], date: datetime
) -> Outgoing:
    fields = {
        "to": _pairs(row.to_addresses),
        "cc": _pairs(row.cc_addresses),
        "bcc": _pairs(row.bcc_addresses),
        "subject": row.subject,
        "text": row.text_body,
        "html": row.html_body,
        "in_reply_to": row.in_reply_to,
        "references": list(row.reference_ids),
        "headers": dict(row.headers),
        "message_id": row.message_id,
    }
    files = [
        MailAttachment(meta["filename"], meta["content_type"], content)
        for meta, content in zip(row.attachments, contents, strict=True)
    ]
    return _outgoing(inbox, fields, files, date)
