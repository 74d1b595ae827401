"""What a folder holds, message by message: UID, Message-ID and arrival time.

When a server renumbers a folder (its UIDVALIDITY changes, after a restore or a rebuild of
its index), every UID inboxd stored for it means nothing any more. The receiver reads this
index of the folder to give the messages it already stored their new UIDs (matched by
Message-ID) and to tell mail that arrived since it last read the folder from mail that was
there all along (by INTERNALDATE). Headers only, peeked, in batches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from mail.imap_session import UID, ImapSession
from mail.parse import parse_message

_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.IGNORECASE)
ITEMS = "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"


@dataclass(frozen=True, slots=True)
class Indexed:
    uid: int
    message_id: str | None
    arrived: datetime | None  # the server's INTERNALDATE


def internaldate(raw: bytes) -> datetime | None:
    """``17-Jul-1996 02:44:25 -0700`` (the day may be space-padded), or None."""
    try:
        return datetime.strptime(raw.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (ValueError, UnicodeDecodeError):
        return None


async def index(session: ImapSession, batch: int = 200) -> list[Indexed]:
    """Every message of the folder ``session`` has open, in UID order."""
    uids = await session.search("ALL")
    found: list[Indexed] = []
    for start in range(0, len(uids), batch):
        for text, literal in await session.fetch_items(uids[start : start + batch], ITEMS):
            uid, when = UID.search(text), _INTERNALDATE.search(text)
            if uid is None:
                continue
            # Read as the stored messages were (mail.parse), so the two Message-IDs compare.
            message_id = parse_message(literal, headers_only=True).message_id if literal else None
            found.append(
                Indexed(
                    int(uid.group(1)), message_id, internaldate(when.group(1)) if when else None
                )
            )
    return sorted(found, key=lambda item: item.uid)
