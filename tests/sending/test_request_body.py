"""sendEmail's own request body limit: its attachments fit, while every other operation (and
every caller without a valid key) keeps the common INBOXD_MAX_BODY_BYTES. The delivery of a
large attachment, byte for byte, is in test_outbox_worker.py."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import httpx
import orjson

from tests.conftest import make_settings, running_stack
from tests.schema.fragments import CREATE, minimal_input
from tests.sending.fragments import SEND
from tests.sending.test_send_email import active_inbox, message

COMMON_LIMIT = 256 * 1024


def attachment(size: int) -> dict[str, str]:
    content = base64.b64encode(os.urandom(size)).decode()
    return {"filename": "big.bin", "contentType": "application/octet-stream",
            "contentBase64": content}  # fmt: skip


async def post(
    base_url: str, key: str | None, body: dict, *, chunked: bool = False
) -> httpx.Response:
    data = orjson.dumps(body)
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the guard counts
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        content = chunks() if chunked else data
        return await http.post("/graphql", content=content, headers=headers)


def send_body(inbox_id: str, **input: object) -> dict:
    return {"query": SEND, "variables": {"inboxId": inbox_id, "input": message(**input)}}


def refused(response: httpx.Response) -> str:
    assert response.status_code == 413, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    return str(error["message"])


async def test_a_send_with_a_1_mib_attachment_is_accepted(tenant, db, base_url):
    inbox_id = await active_inbox(tenant, db)
    body = send_body(inbox_id, attachments=[attachment(1024 * 1024)])
    assert len(orjson.dumps(body)) > 4 * COMMON_LIMIT
    for chunked in (False, True):
        response = await post(base_url, tenant.key, body, chunked=chunked)
        assert response.status_code == 200, response.text
        payload = response.json()["data"]["sendEmail"]
        assert payload["__typename"] == "SendEmailSuccess", payload
        assert payload["outgoingMessage"]["attachments"][0]["size"] == 1024 * 1024


async def test_every_other_request_keeps_the_common_limit(tenant, db, base_url):
    inbox_id = await active_inbox(tenant, db)
    big = attachment(300 * 1024)
    # Another mutation.
    create = {"query": CREATE, "variables": {"input": minimal_input(description="x" * 300_000)}}
    assert "Only a sendEmail mutation" in refused(await post(base_url, tenant.key, create))
    # sendEmail beside another field, twice, or not the operation the request runs.
    two = SEND.replace("sendEmail(", "a: cancelEmail(id: $inboxId) { __typename } sendEmail(", 1)
    doubled = SEND.replace("sendEmail(", "a: sendEmail(inboxId: $inboxId, input: $input) "
                           "{ __typename } sendEmail(", 1)  # fmt: skip
    for query in (two, doubled):
        body = {"query": query, "variables": send_body(inbox_id, attachments=[big])["variables"]}
        refused(await post(base_url, tenant.key, body))
    other = send_body(inbox_id, attachments=[big])
    other["query"] = SEND.replace("mutation(", "mutation Send(", 1) + (
        ' mutation Other { deleteEmailInbox(id: "x") { __typename } }'
    )
    other["operationName"] = "Other"
    refused(await post(base_url, tenant.key, other))
    # A sendEmail without a valid key, or with its bytes in the query text itself.
    refused(await post(base_url, None, send_body(inbox_id, attachments=[big])))
    refused(await post(base_url, "inbx_live_madeup", send_body(inbox_id, attachments=[big])))
    inline = SEND.replace("$input: SendEmailInput!", "").replace(
        "input: $input", f'input: {{to: ["a@example.com"], subject: "s", text: "{"x" * 300_000}"}}'
    )
    refused(await post(base_url, tenant.key, {"query": inline, "variables": {"inboxId": inbox_id}}))
    for chunked in (False, True):
        refused(await post(base_url, tenant.key, create, chunked=chunked))


async def test_the_send_limit_follows_the_message_size_and_the_message_size_rules(
    database_url, certs, keyring, make_tenant, db
):
    # INBOXD_SEND_MAX_REQUEST_BYTES unset: max message bytes * 4/3 + the common limit.
    settings = make_settings(database_url, certs, None, send_max_message_bytes=300_000)
    assert settings.send_request_limit == 400_000 + COMMON_LIMIT
    tenant = await make_tenant()
    async with running_stack(settings, keyring, worker=False) as stack:
        inbox_id = await active_inbox(tenant, db)
        # Within the request limit but over the message size: the message's own rule speaks.
        fits = await post(stack.base_url, tenant.key, send_body(inbox_id, attachments=[
            attachment(320_000)]))  # fmt: skip
        payload = fits.json()["data"]["sendEmail"]
        assert payload["__typename"] == "ValidationError", payload
        assert [f["field"] for f in payload["fields"]] == ["attachments"]
        over = send_body(inbox_id, attachments=[attachment(520_000)])
        for chunked in (False, True):
            message = refused(await post(stack.base_url, tenant.key, over, chunked=chunked))
            assert "INBOXD_SEND_MAX_REQUEST_BYTES" in message and "662144" in message
