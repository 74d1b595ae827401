// Sending from an inbox: a form calling sendEmail and the inbox's outbox with each message's
// state kept live by emailInboxEvents (OUTGOING_CHANGED; no polling). Each submission of the
// form carries one idempotency key, kept until it is sent: a double click, or a retry after a
// lost answer, queues the message once.
import { gql, subscribe } from "./api.js";
import { badge, h, replace, when } from "./dom.js";
import { address } from "./messages.js";

const OUTGOING = `id state to { name address } cc { name address } subject createdAt sentAt
  lastCode lastReply lastHint attempts version refusedRecipients { address reply }`;
const SEND = `mutation Send($id: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $id, input: $input) {
  __typename ... on SendEmailSuccess { outgoingMessage { ${OUTGOING} } }
  ... on UserError { code message } ... on ValidationError { fields { field message } }
  ... on DailySendLimitReached { limit resetsAt } ... on RateLimited { retryAfterSeconds } } }`;
const CANCEL = `mutation Cancel($id: ID!) { cancelEmail(id: $id) { __typename
  ... on CancelEmailSuccess { outgoingMessage { ${OUTGOING} } } ... on UserError { message } } }`;
const LIST = `query Outbox($id: ID!, $first: Int!, $after: String) { outgoingMessages(inboxId: $id, first: $first, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { ${OUTGOING} } } } }`;
const REPLYING = `query Replying($id: ID!) { message(id: $id) { id subject from { name address } replyTo { name address } } }`;
const EVENTS = `subscription Outgoing { emailInboxEvents { kind inboxId outgoingMessageId outgoingState } }`;
const FIELDS = [
  ["to", "To", "text", "Addresses, comma-separated: a@example.com, Name <b@example.com>."],
  ["cc", "Cc", "text"],
  ["bcc", "Bcc", "text", "Receives the message; never shown to the others."],
  ["subject", "Subject", "text"],
  ["text", "Text", "textarea"],
  ["html", "HTML (optional)", "textarea", "Sanitised by inboxd before sending."],
  ["attachments", "Attachments", "file"],
];

function newKey() {
  // getRandomValues works outside secure contexts too (randomUUID does not).
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function addresses(raw) {
  return raw.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function attachmentInputs(files) {
  return Promise.all(
    [...files].map(async (file) => ({
      filename: file.name,
      contentType: file.type || "application/octet-stream",
      contentBase64: base64(await file.arrayBuffer()),
    })),
  );
}

// The outbox card: newest first, each row's state following OUTGOING_CHANGED events.
function outbox(inboxId, size) {
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Older sent messages");
  const rows = new Map();
  let loads = 0;
  let endCursor = null;

  function row(m) {
    const cancel =
      m.state === "QUEUED"
        ? h("button", { type: "button", class: "cancel", onclick: () => cancelMessage(m.id) }, "Cancel")
        : null;
    const outcome = [m.lastCode ? `${m.lastCode} ${m.lastReply || ""}` : "", m.lastHint ? h("p", { class: "hint" }, m.lastHint) : null,
      m.refusedRecipients.map((r) => h("p", {}, `${r.address} refused: ${r.reply}`))];
    const tr = h(
      "tr",
      { "data-outgoing": m.id },
      h("td", { "data-label": "Queued" }, when(m.createdAt)),
      h("td", { "data-label": "To" }, [...m.to, ...m.cc].map(address).join(", ")),
      h("td", { "data-label": "Subject" }, m.subject),
      h("td", { "data-label": "State", class: "state" }, badge(m.state), m.sentAt ? ` ${when(m.sentAt)}` : ""),
      h("td", { "data-label": "Server said" }, outcome, h("p", { class: "row-note", role: "status" }), cancel),
    );
    const old = rows.get(m.id);
    rows.set(m.id, { tr, version: m.version });
    old?.tr.replaceWith(tr);
    return tr;
  }

  async function load(older = false) {
    const mine = ++loads;
    const data = (await gql(LIST, { id: inboxId, first: size, after: older ? endCursor : null })).outgoingMessages;
    if (mine !== loads) return;
    if (!older) {
      rows.clear();
      replace(body);
    }
    endCursor = data.pageInfo.endCursor;
    more.hidden = !data.pageInfo.hasNextPage;
    body.append(...data.edges.map(({ node }) => row(node)));
    if (!rows.size) replace(body, h("tr", {}, h("td", { colspan: 5 }, "Nothing sent yet.")));
  }

  async function cancelMessage(id) {
    const payload = (await gql(CANCEL, { id })).cancelEmail;
    if (payload.outgoingMessage) return row(payload.outgoingMessage);
    const note = rows.get(id)?.tr.querySelector(".row-note");
    if (note) replace(note, payload.message);
  }

  const stop = subscribe(EVENTS, {}, ({ emailInboxEvents: e }) => {
    if (e.kind !== "OUTGOING_CHANGED" || e.inboxId !== inboxId) return;
    // One read of the page rather than of the message: a new message joins it, a changed one
    // gets its reply and hint, and an older read cannot overwrite a newer one.
    load();
  });
  const node = h(
    "div",
    {},
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "outbox" },
        h("caption", { class: "visually-hidden" }, "Sent messages, newest first"),
        h("thead", {}, h("tr", {}, ["Queued", "To", "Subject", "State", "Server said"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    more,
  );
  return { node, ready: load(), dispose: stop, refresh: () => load() };
}

// The compose card; `replyTo` is a received message's id (from its page's Reply) or null.
export async function composer(inboxId, replyTo) {
  const controls = new Map();
  const summary = h("div", { class: "summary", role: "alert", tabindex: "-1" });
  const sent = h("p", { class: "note", role: "status" });
  const button = h("button", { type: "submit" }, "Send");
  let key = null; // this submission's idempotency key; a new one once it is queued
  let replying = null;

  function slot(name) {
    return controls.get(name).error;
  }

  function fieldNode([name, label, type, help]) {
    const id = `c-${name}`;
    const attrs = { id, name, "aria-describedby": `${id}-help ${id}-error` };
    const input =
      type === "textarea"
        ? h("textarea", { ...attrs, rows: name === "text" ? 6 : 3 })
        : h("input", { ...attrs, type, multiple: type === "file", autocomplete: "off" });
    const error = h("div", { id: `${id}-error`, class: "error" });
    controls.set(name, { input, error });
    return h(
      "div",
      { class: "field", "data-field": name },
      h("label", { for: id }, label),
      input,
      h("p", { id: `${id}-help`, class: "help" }, help || ""),
      error,
    );
  }

  function clearErrors() {
    replace(summary);
    for (const { input, error } of controls.values()) {
      input.removeAttribute("aria-invalid");
      replace(error);
    }
  }

  // "to[1]" -> the To field; "attachments[0].filename" -> Attachments; else the summary.
  function showAt(path, message) {
    const name = path.replace(/[[.].*$/, "");
    const known = controls.get(name);
    if (!known) {
      summary.append(h("p", {}, `${path}: ${message}`));
      return null;
    }
    known.input.setAttribute("aria-invalid", "true");
    known.error.append(h("p", {}, path === name ? message : `${path}: ${message}`));
    return known.input;
  }

  async function input() {
    const value = (name) => controls.get(name).input.value.trim();
    const result = {
      to: addresses(value("to")),
      cc: addresses(value("cc")),
      bcc: addresses(value("bcc")),
      subject: value("subject") || null,
      text: controls.get("text").input.value || null,
      html: value("html") || null,
      attachments: await attachmentInputs(controls.get("attachments").input.files),
      idempotencyKey: key,
    };
    if (replying) result.replyToMessageId = replying.id;
    return result;
  }

  async function send(event) {
    event.preventDefault();
    if (button.disabled) return; // a second click while the first is on its way
    button.disabled = true;
    clearErrors();
    replace(sent);
    key ??= newKey();
    try {
      const payload = (await gql(SEND, { id: inboxId, input: await input() })).sendEmail;
      shown(payload);
    } catch (error) {
      // The answer was lost: the same key goes with the retry, so it cannot send twice.
      replace(summary, h("p", {}, `Not sent: ${error.message}. Sending again is safe.`));
      summary.focus();
    } finally {
      button.disabled = false;
    }
  }

  function shown(payload) {
    if (payload.outgoingMessage) {
      key = null;
      form.reset();
      stopReplying();
      replace(sent, `Queued: ${payload.outgoingMessage.subject} (${payload.outgoingMessage.state}).`);
      box.refresh();
      return;
    }
    let first = null;
    if (payload.__typename === "ValidationError") {
      replace(summary, h("p", {}, payload.message));
      for (const issue of payload.fields) first ??= showAt(issue.field, issue.message);
    } else if (payload.__typename === "DailySendLimitReached") {
      replace(summary, h("p", {}, `${payload.message} (limit ${payload.limit} a day; sending resumes ${when(payload.resetsAt)}). `,
        h("a", { href: `#/inboxes/${encodeURIComponent(inboxId)}/edit` }, "Change the daily send limit")));
    } else if (payload.__typename === "InboxNotActive") {
      replace(summary, h("p", {}, `${payload.message}. `,
        h("a", { href: `#/inboxes/${encodeURIComponent(inboxId)}/edit` }, "Open the inbox's settings")));
    } else {
      replace(summary, h("p", {}, payload.message));
    }
    (first || summary).focus();
  }

  function stopReplying() {
    replying = null;
    replace(replyNote);
  }

  const replyNote = h("div", { class: "reply-note" });
  const form = h(
    "form",
    { class: "compose", novalidate: true, onsubmit: send, "aria-label": "Send a message" },
    replyNote,
    FIELDS.map(fieldNode),
    summary,
    h("div", { class: "actions" }, button),
    sent,
  );
  if (replyTo) {
    replying = (await gql(REPLYING, { id: replyTo })).message;
    if (replying) {
      const back = replying.replyTo[0] || replying.from;
      controls.get("to").input.value = back ? address(back) : "";
      replace(replyNote, h("p", {}, `Replying to “${replying.subject || "(no subject)"}” from ${address(replying.from)}; the subject gets Re: when left blank. `),
        h("button", { type: "button", class: "link-button", onclick: stopReplying }, "Not a reply"));
    }
  }
  const box = outbox(inboxId, 10);
  await box.ready;
  return { compose: form, outbox: box.node, dispose: box.dispose };
}
