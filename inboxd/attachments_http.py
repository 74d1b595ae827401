"""``GET /attachments/<message id>/<index>``: an attachment's exact bytes, for whoever holds
its signed link (``Message.attachments.downloadUrl``, ``storage.attachments``).

The link is the capability, so no API key is asked for: it names one attachment, is bound to
the message's workspace and expires after ``INBOXD_ATTACHMENT_URL_SECONDS``. The signature is
checked before the database is asked anything. The bytes are served as a download that a
browser neither renders nor sniffs, under a file name a sender cannot turn into headers.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from email.utils import encode_rfc2231

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inboxd.logs import get_logger
from inboxd.settings import Settings
from resolvers.state import AppState
from storage.attachments import (
    AttachmentFile,
    AttachmentLinks,
    LinkCheck,
    LinkTarget,
    read_attachment,
)
from storage.db import UNAVAILABLE_ERRORS

log = get_logger("inboxd.attachments")

MAX_INDEX = 10_000
# A media type as the email package reports it (lower-case type/subtype), nothing else.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._() -]")


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def content_disposition(filename: str | None, content_type: str) -> str:
    """``attachment`` with the name in RFC 6266/5987 form (percent-encoded UTF-8) and a plain
    ASCII fallback: nothing of a hostile name (CR, LF, quotes, ``;``) reaches the header."""
    name = (filename or "").replace("/", "_").replace("\\", "_").strip()
    if not name:
        name = "attachment" + (mimetypes.guess_extension(content_type) or "")
    fallback = _NOT_PLAIN.sub("_", name)[:150]
    return f'attachment; filename="{fallback}"; filename*={encode_rfc2231(name, "UTF-8")}'


def _download(found: AttachmentFile) -> Response:
    media_type = found.content_type if _MEDIA_TYPE.fullmatch(found.content_type) else ""
    return Response(
        found.content,
        headers={
            "content-type": media_type or "application/octet-stream",
            "content-disposition": content_disposition(found.filename, found.content_type),
            "x-content-type-options": "nosniff",
            "cache-control": "private, no-store",
            # Should a browser render it anyway: no scripts, no requests, no same origin.
            "content-security-policy": "sandbox; default-src 'none'",
        },
    )


def _target(request: Request) -> LinkTarget | None:
    try:
        index = int(request.path_params["index"])
        target = LinkTarget(
            workspace_id=uuid.UUID(request.query_params.get("workspace", "")),
            message_id=uuid.UUID(request.path_params["message_id"]),
            index=index,
        )
    except ValueError:
        return None
    return target if 0 <= index < MAX_INDEX else None


def attachment_routes(settings: Settings, state: AppState) -> list[Route]:
    """The download route; also gives ``state`` the link signer GraphQL's downloadUrl uses."""
    if state.attachment_links is None:
        state.attachment_links = AttachmentLinks(state.keyring, settings.attachment_url_seconds)
    links = state.attachment_links

    async def download(request: Request) -> Response:
        target = _target(request)
        expires = request.query_params.get("expires", "")
        if target is None or not expires.isdigit() or len(expires) > 12:
            return _error(403, "BAD_LINK", "This is not a valid attachment link.")
        checked = links.check(target, int(expires), request.query_params.get("sig", ""))
        if checked is LinkCheck.BAD_SIGNATURE:
            return _error(403, "BAD_LINK", "The attachment link's signature does not match.")
        if checked is LinkCheck.EXPIRED:
            return _error(
                403,
                "LINK_EXPIRED",
                "The attachment link has expired: read the message again for a fresh downloadUrl.",
            )
        try:
            async with state.db.connection() as connection:
                found = await read_attachment(connection, target)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("attachment read failed", error=type(exc).__name__)
            return _error(503, "SERVICE_UNAVAILABLE", "The database is unavailable; try again.")
        if found is None:
            return _error(404, "NOT_FOUND", "The message or its attachment is gone.")
        return _download(found)

    return [Route("/attachments/{message_id}/{index}", download, methods=["GET"])]
