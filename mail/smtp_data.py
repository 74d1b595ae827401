"""DATA with the caller's write-ahead mark between the message and its last line.

The lone ``.`` line ends a message; until the server reads it, DATA is unfinished and a lost
connection discards it (RFC 5321 4.1.1.4). ``hook_data`` makes ``sendmail``'s DATA send the
message, await ``before_data`` (the mark), and only then send that line: a caller that dies
or fails before its mark has sent nothing, and only the time between that line and the
server's reply is left in doubt (RFC 1047).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosmtplib
from aiosmtplib import SMTPDataError, SMTPServerDisconnected, SMTPStatus, SMTPTimeoutError
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse

# The caller's write-ahead mark: True to finish DATA, False to abandon it (nothing is sent).
BeforeData = Callable[[], Awaitable[bool]]


class Withheld(Exception):
    """``before_data`` said no: DATA is abandoned before its last line."""


@dataclass(slots=True)
class Progress:
    handed: bool = False  # ``before_data`` called (its mark may stand): never resent
    began: bool = False  # the message's last line sent: a silence leaves its fate unknown


# The message's last line: until the server reads it, DATA is unfinished (RFC 5321 4.1.1.4).
END_OF_DATA = b".\r\n"


def hook_data(smtp: aiosmtplib.SMTP, before_data: BeforeData | None, progress: Progress) -> None:
    """Run DATA with ``before_data`` between the message and its last line, inside
    ``sendmail``: it calls ``self.data``, its one step after RCPT, so the hook replaces that
    bound method on this connection's instance (``unhook_data`` removes it before the
    session serves another message). The library's envelope handling (SIZE, SMTPUTF8,
    refused recipients, RSET) stays whole, and DATA is sent as the library sends it (its
    line endings and dot-stuffing; the command through ``execute_command``), only with
    ``END_OF_DATA`` written after the mark (tests/mail/test_send.py compares the bytes)."""

    async def marked_data(message: str | bytes, /, **kwargs: Any) -> SMTPResponse:
        protocol = smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        timeout = kwargs.get("timeout")  # sendmail's, or its Default token: the session's
        wait = timeout if isinstance(timeout, int | float) else smtp.timeout
        raw = message.encode("ascii") if isinstance(message, str) else message
        body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw))
        try:
            start = await smtp.execute_command(b"DATA", timeout=wait)
            if start.code != SMTPStatus.start_input:
                raise SMTPDataError(start.code, start.message)
            protocol.write(body)
            progress.handed = True
            if before_data is not None and not await before_data():
                smtp.close()  # the unfinished DATA goes with the connection
                raise Withheld
            progress.began = True
            protocol.write(END_OF_DATA)
            response = await protocol.read_response(timeout=wait)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            smtp.close()
            raise
        if response.code != SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response

    smtp.data = marked_data  # type: ignore[method-assign]


def unhook_data(smtp: aiosmtplib.SMTP) -> None:
    vars(smtp).pop("data", None)
