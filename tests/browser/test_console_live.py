"""The inbox list stays true to the server when a status changes while the list is being read
again: an event that reaches the page while the list's answer is on its way is applied to the
rows that answer brings, not lost with the rows it replaces."""

from __future__ import annotations

from tests.browser.test_console import create, server, signed_in
from tests.support.waiting import subscribed, wait_until

STATUS = "query($id: ID!) { emailInbox(id: $id) { status } }"
UPDATE = """mutation($id: ID!, $input: UpdateEmailInboxInput!) { updateEmailInbox(id: $id,
  input: $input) { __typename } }"""


async def test_a_status_that_changes_while_the_list_reloads_is_shown(browser, verifier, mail):
    tenant = await verifier.tenant()
    await signed_in(browser, verifier, tenant)
    await browser("goto", hash="#/inboxes")
    await browser("waitText", selector="caption", text="Inboxes (0)")
    await subscribed(verifier.stack.state.hub, tenant.workspace.id, count=2)  # header, list
    inbox = await create(tenant, "late@console.test", mail)
    await browser("waitText", selector=f'tr[data-inbox="{inbox}"] .status', text="ACTIVE")
    # The list is read again (Apply) and the server's answer, with the inbox ACTIVE, is held
    # back from the page while the inbox fails its next verification.
    await browser("hold", match="query Inboxes")
    await browser("click", selector="text=Apply")
    await browser("waitHeld", count=1)
    wrong = server(mail["imap"].port, "not-the-password")
    updated = await tenant.client(UPDATE, {"id": inbox, "input": {"imap": wrong}})
    assert updated.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"

    async def failed() -> bool:
        answer = await tenant.client(STATUS, {"id": inbox})
        return bool(answer.data["emailInbox"]["status"] == "FAILED")

    await wait_until(failed, "the inbox FAILED its verification")
    await browser("waitFrame", texts=[inbox, "FAILED"])  # the event reached the page
    await browser("release")
    await browser("waitText", selector=f'tr[data-inbox="{inbox}"] .status', text="FAILED")
