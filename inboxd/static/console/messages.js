// Received mail: an inbox's messages in pages with filters, kept live by the messageReceived
// subscription (no polling), and one message's page. A message's HTML is the API's sanitised
// copy, shown only inside a sandboxed frame whose own policy runs no script and loads nothing;
// the console never parses mail as markup in its own document.
import { gql, subscribe } from "./api.js";
import { h, replace, when } from "./dom.js";

const SUMMARY = "id subject from { name address } receivedAt seen folder attachments { filename }";
const LIST = `query Messages($id: ID!, $first: Int!, $after: String, $filter: MessageFilter) {
  messages(inboxId: $id, first: $first, after: $after, filter: $filter) {
  pageInfo { hasNextPage endCursor } edges { node { ${SUMMARY} } } } }`;
const RECEIVED = `subscription Received($id: ID!) { messageReceived(inboxId: $id) { ${SUMMARY} } }`;
const ADDRESS = "name address";
const ONE = `query Message($id: ID!) { message(id: $id) { id inboxId subject from { ${ADDRESS} }
  to { ${ADDRESS} } cc { ${ADDRESS} } replyTo { ${ADDRESS} } sentAt receivedAt folder textBody htmlBody
  parseError attachments { filename contentType size notStoredReason downloadUrl } } }`;
// The frame's own policy (on top of the sandbox, which already forbids scripts): nothing is
// fetched, so a remote image cannot tell the sender the mail was opened.
const FRAME_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

export function address(a) {
  if (!a) return "";
  return a.name ? `${a.name} <${a.address}>` : a.address;
}

function field(id, label, control) {
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

// The messages card of an inbox's page. `size` is the page size (?messages=N).
export function messageList(inboxId, size) {
  const state = { first: size, cursors: [null], filter: {}, endCursor: null, loads: 0 };
  const body = h("tbody");
  const position = h("span", { class: "position" });
  const live = h("p", { class: "note", role: "status" });
  const previous = h("button", { type: "button", onclick: () => page(-1) }, "Newer messages");
  const next = h("button", { type: "button", onclick: () => page(1) }, "Older messages");
  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter messages", onsubmit: (event) => apply(event) },
    field("m-from", "From", h("input", { name: "from", placeholder: "part of the address" })),
    field("m-subject", "Subject", h("input", { name: "subject" })),
    field("m-folder", "Folder", h("input", { name: "folder", placeholder: "any" })),
    h("button", { type: "submit" }, "Filter"),
  );

  function apply(event) {
    event.preventDefault();
    state.filter = {};
    for (const [name, value] of new FormData(filters)) if (value.trim()) state.filter[name] = value.trim();
    state.cursors = [null];
    load();
  }

  function row(m) {
    const href = `#/inboxes/${encodeURIComponent(inboxId)}/messages/${encodeURIComponent(m.id)}`;
    return h(
      "tr",
      { "data-message": m.id, class: m.seen ? "" : "unseen" },
      h("td", { "data-label": "Received" }, when(m.receivedAt)),
      h("td", { "data-label": "From" }, address(m.from)),
      h("td", {}, h("a", { href }, m.subject || "(no subject)"), m.seen ? "" : h("span", { class: "visually-hidden" }, " (unread)")),
      h("td", { "data-label": "Attachments" }, m.attachments.length ? String(m.attachments.length) : ""),
    );
  }

  async function load() {
    const mine = ++state.loads; // a slower, older load must not overwrite a newer one
    const data = (await gql(LIST, { id: inboxId, first: state.first, after: state.cursors.at(-1), filter: state.filter })).messages;
    if (mine !== state.loads) return;
    state.endCursor = data.pageInfo.endCursor;
    const start = (state.cursors.length - 1) * state.first;
    replace(body, data.edges.length ? data.edges.map(({ node }) => row(node)) : h("tr", {}, h("td", { colspan: 4 }, "No message received yet.")));
    replace(position, data.edges.length ? `${start + 1}–${start + data.edges.length}` : "");
    previous.disabled = state.cursors.length === 1;
    next.disabled = !data.pageInfo.hasNextPage;
  }

  function page(step) {
    if (step > 0) state.cursors.push(state.endCursor);
    else state.cursors.pop();
    load();
  }

  const stop = subscribe(RECEIVED, { id: inboxId }, ({ messageReceived: m }) => {
    replace(live, `New message from ${address(m.from)}: ${m.subject || "(no subject)"}`);
    // Newest first: a new message belongs on the first page; elsewhere the note says it came.
    if (state.cursors.length === 1) load();
  });
  const node = h(
    "div",
    { class: "messages" },
    filters,
    live,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "message-list" },
        h("caption", { class: "visually-hidden" }, "Received messages, newest first"),
        h("thead", {}, h("tr", {}, ["Received", "From", "Subject", "Attachments"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    h("nav", { class: "pager", "aria-label": "Message pages" }, previous, position, next),
  );
  return { node, ready: load(), dispose: stop };
}

function htmlFrame(html) {
  const frame = h("iframe", {
    class: "html-body",
    title: "The message's HTML, sanitised",
    referrerpolicy: "no-referrer",
  });
  // No allow-scripts, no allow-same-origin: the frame is an opaque origin that runs nothing.
  frame.setAttribute("sandbox", "");
  frame.srcdoc = `<!doctype html><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${FRAME_POLICY}">${html}`;
  return frame;
}

function size(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`;
}

export async function messagePage(inboxId, id) {
  const message = (await gql(ONE, { id })).message;
  const back = h("a", { href: `#/inboxes/${encodeURIComponent(inboxId)}` }, "Back to the inbox");
  if (!message) return { node: h("div", { class: "stack" }, h("h1", { tabindex: "-1" }, "No such message"), back) };
  const reply = `#/inboxes/${encodeURIComponent(inboxId)}?reply=${encodeURIComponent(message.id)}`;
  const list = (addresses) => addresses.map(address).join(", ");
  const attachments = message.attachments.map((a) =>
    h(
      "li",
      {},
      a.downloadUrl
        ? h("a", { href: a.downloadUrl, download: a.filename || "attachment" }, a.filename || "(unnamed)")
        : h("span", {}, a.filename || "(unnamed)", `: not stored (${a.notStoredReason})`),
      ` ${a.contentType}, ${size(a.size)}`,
    ),
  );
  const card = (title, ...body) => h("section", { class: "card" }, h("h2", {}, title), ...body);
  const node = h(
    "div",
    { class: "stack message-page" },
    back,
    h("h1", { tabindex: "-1" }, message.subject || "(no subject)"),
    h(
      "dl",
      { class: "facts" },
      [
        ["From", address(message.from)],
        ["To", list(message.to)],
        ["Cc", list(message.cc)],
        ["Reply to", list(message.replyTo)],
        ["Sent", message.sentAt ? when(message.sentAt) : ""],
        ["Received", `${when(message.receivedAt)} in ${message.folder}`],
      ]
        .filter(([, value]) => value)
        .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    ),
    message.parseError ? h("p", { class: "error" }, `Not fully read: ${message.parseError}`) : null,
    h("div", { class: "actions" }, h("a", { class: "button", href: reply }, "Reply")),
    card("Text", message.textBody ? h("pre", { class: "body text-body" }, message.textBody) : h("p", {}, "No text part.")),
    message.htmlBody ? card("HTML (sanitised; no scripts, nothing loaded)", htmlFrame(message.htmlBody)) : null,
    card("Attachments", attachments.length ? h("ul", { class: "attachments" }, attachments) : h("p", {}, "None.")),
  );
  return { node };
}
