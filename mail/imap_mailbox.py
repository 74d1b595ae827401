"""The commands of an IMAP session that change a mailbox (flags, deletion, APPEND), the LIST
that finds a folder to append to, and the session's errors.

``ImapSession`` (``mail.imap_session``) reads with EXAMINE and BODY.PEEK and never changes a
thing; what inboxd was asked to change (``inboxd.message_actions``) goes through these
methods, mixed into the same session so that the process watching an inbox needs no second
login. A folder is opened read-write with SELECT first, and its UIDVALIDITY returned so the
caller can check the UIDs it holds still mean the same messages.

Deleting prefers UID EXPUNGE (UIDPLUS, RFC 4315): it removes exactly the UIDs given. Without
UIDPLUS, EXPUNGE removes every message flagged \\Deleted, including ones another client
flagged and may still mean to undelete: the messages are then flagged \\Deleted and expunged
only when no other message of the folder is; otherwise they are left flagged, for the
mailbox owner's client to expunge with the rest.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Any

from mail.results import ProbeCode

UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
# A LIST response after aioimaplib took its "* LIST ": (attributes) delimiter name.
_LIST = re.compile(rb'^\(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.*)$', re.IGNORECASE)
_LITERAL = re.compile(rb"^\{(\d+)\+?\}$")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.IGNORECASE)


class ImapSessionError(Exception):
    """The session could not be opened or broke; ``message`` is safe to show. ``auth``: the
    server refused the credentials (never retried quickly: providers lock such accounts)."""

    def __init__(
        self, code: str, message: str, *, hint: str | None = None, auth: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.auth = auth


class CommandRefused(ImapSessionError):
    """The server answered NO or BAD to a command that changes the mailbox: the session is
    still usable, the change was not made."""


def quote_mailbox(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flags_of(fetch_text: bytes) -> frozenset[str]:
    """The flags in a FETCH response's text, lowercased (flags ignore case): ``{"\\seen"}``."""
    match = _FLAGS.search(fetch_text)
    text = match.group(1).decode("ascii", "replace").lower() if match else ""
    return frozenset(text.split())


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(uid) for uid in sorted(set(uids)))


@dataclass(frozen=True, slots=True)
class Folder:
    name: str  # as the server spells it (modified UTF-7 left encoded): pass it back as is
    attributes: frozenset[str]  # lowercased: {"\\hasnochildren", "\\sent"}
    delimiter: str | None  # of the hierarchy ("/", "."); None for a flat namespace


def _unquote(word: bytes) -> str:
    text = word.decode("utf-8", "replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def folders_of(lines: list[Any]) -> list[Folder]:
    """The folders of a LIST response's lines (quoted, atom and literal names alike)."""
    found: list[Folder] = []
    pending: tuple[frozenset[str], str | None] | None = None  # a name sent as a literal
    for line in lines:
        if isinstance(line, bytearray):
            if pending is not None:
                found.append(Folder(bytes(line).decode("utf-8", "replace"), *pending))
            pending = None
            continue
        match = _LIST.match(bytes(line))
        if match is None:
            continue
        attributes = frozenset(match.group(1).decode("ascii", "replace").lower().split())
        delimiter = None if match.group(2).upper() == b"NIL" else _unquote(match.group(2))
        name = match.group(3).strip()
        if _LITERAL.match(name):
            pending = (attributes, delimiter)
        else:
            found.append(Folder(_unquote(name), attributes, delimiter))
    return found


class MailboxWrites:
    """Mixed into ``ImapSession``: its aioimaplib client is ``_client``."""

    _client: Any
    _settings: Any

    async def _uid(self, command: str, *args: str) -> Any:
        # aioimaplib bounds only UID FETCH by its timeout.
        timeout = self._settings.command_timeout
        return await asyncio.wait_for(self._client.uid(command, *args), timeout)

    async def select(self, folder: str) -> int:
        """Open ``folder`` read-write; its UIDVALIDITY. Raises CommandRefused."""
        response = await self._client.select(quote_mailbox(folder))
        if response.result != "OK":
            raise CommandRefused("FOLDER_NOT_FOUND", f"The server would not open {folder!r}.")
        validity = UIDVALIDITY.search(b"\n".join(bytes(line) for line in response.lines))
        if validity is None:
            raise CommandRefused("PROTOCOL_ERROR", "The server sent no UIDVALIDITY.")
        return int(validity.group(1))

    async def folders(self) -> list[Folder]:
        """Every folder, with its attributes (RFC 6154 special-use ones among them)."""
        response = await asyncio.wait_for(
            self._client.list('""', '"*"'), self._settings.command_timeout
        )
        if response.result != "OK":
            raise CommandRefused("LIST_REFUSED", "The server refused to list its folders.")
        return folders_of(response.lines)

    async def append(self, folder: str, data: bytes, flags: str) -> None:
        """Store ``data`` as a new message of ``folder`` with ``flags`` ("(\\Seen)")."""
        response = await self._client.append(data, mailbox=quote_mailbox(folder), flags=flags)
        if response.result != "OK":
            raise CommandRefused("APPEND_REFUSED", f"The server refused to store in {folder!r}.")

    async def _store(self, uids: list[int], change: str, flag: str) -> None:
        response = await self._uid("store", _uid_set(uids), f"{change}FLAGS.SILENT", flag)
        if response.result != "OK":
            raise CommandRefused("STORE_REFUSED", f"The server refused to store {flag}.")

    async def set_flag(self, uids: list[int], flag: str, on: bool) -> None:
        """Add (``on``) or remove ``flag`` on ``uids`` of the selected folder."""
        await self._store(uids, "+" if on else "-", f"({flag})")

    async def delete(self, uids: list[int]) -> bool:
        """Remove ``uids`` from the selected folder; False when, for want of UIDPLUS, they were
        only flagged \\Deleted (see the module's docstring). UIDs already gone are no error."""
        await self._store(uids, "+", "(\\Deleted)")
        if "UIDPLUS" in self._client.protocol.capabilities:
            response = await self._uid("expunge", _uid_set(uids))
        else:
            flagged = await self._client.uid_search("DELETED", charset=None)
            if flagged.result != "OK":
                raise CommandRefused("SEARCH_REFUSED", "The server refused UID SEARCH DELETED.")
            words = b" ".join(bytes(line) for line in flagged.lines[:-1]).split()
            if not {int(w) for w in words if w.isdigit()} <= set(uids):
                return False
            response = await self._client.expunge()
        if response.result != "OK":
            raise CommandRefused("EXPUNGE_REFUSED", "The server refused to expunge.")
        return True


def network_error(exc: BaseException) -> ImapSessionError:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ImapSessionError(ProbeCode.TIMEOUT.value, "The IMAP server did not answer in time.")
    if isinstance(exc, ConnectionRefusedError):
        return ImapSessionError(
            ProbeCode.CONNECTION_REFUSED.value, "The IMAP server refused the connection."
        )
    if isinstance(exc, ssl.SSLError):
        return ImapSessionError(ProbeCode.TLS_HANDSHAKE_FAILED.value, "The TLS handshake failed.")
    return ImapSessionError(
        "CONNECTION_FAILED", f"The IMAP connection failed ({type(exc).__name__})."
    )
