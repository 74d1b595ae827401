// One inbox: settings (never a password), verification history, the DNS checklist, test
// buttons, the audit trail and received messages. The status and history follow the inbox
// live through emailInboxStatus.
import { gql, subscribe } from "./api.js";
import { badge, h, replace, when } from "./dom.js";
import { PROBE, sideResult, verification } from "./verify.js";

const SERVER = "host port security username hasPassword tlsCertificateSha256";
const RECORD = "state records message";
const READ = `query Page($id: ID!) { emailInbox(id: $id) {
  id name email displayName department description active provider status statusReason
  version dailySendLimit sendingEnabled tags replyTo lastVerifiedAt
  smtp { ${SERVER} } imap { ${SERVER} } receiving { enabled folders state lastCheckAt }
  setupStatus { domain overall checkedAt mx { ${RECORD} } spf { ${RECORD} } dkim { ${RECORD} } dmarc { ${RECORD} } }
  connectionTests(first: 10) { edges { node { id state reason createdAt finishedAt error
    smtp { ${PROBE} } imap { ${PROBE} } roundTrip { ok code message hint delayMs } } } } } }`;
const AUDIT = `query Audit($id: ID!) { auditLog(inboxId: $id, first: 20) { edges { node {
  id action apiKeyPrefix clientAddress details at } } } }`;
const MESSAGES = `query Messages($id: ID!, $after: String) { messages(inboxId: $id, first: 20, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { id subject from { name address } receivedAt textBody seen } } } }`;
const TEST = `mutation Test($id: ID!, $roundTrip: Boolean!) { testConnection(id: $id, roundTrip: $roundTrip) {
  __typename ... on UserError { message } } }`;
const CHECK = `mutation Check($id: ID!) { checkDomainSetup(id: $id) { __typename ... on UserError { message } } }`;
const STATUS = `subscription Live($id: ID!) { emailInboxStatus(id: $id) { id status version } }`;

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "")]));
}

function serverFacts(label, side) {
  return h(
    "section",
    {},
    h("h3", {}, label),
    facts([
      ["Server", `${side.host}:${side.port}`],
      ["Encryption", side.security],
      ["Username", side.username],
      ["Password", side.hasPassword ? "stored (write-only)" : "none"],
      ["Pinned certificate", side.tlsCertificateSha256 ? h("code", { class: "fingerprint" }, side.tlsCertificateSha256) : "none"],
    ]),
  );
}

function table(caption, heads, rows, empty) {
  if (!rows.length) return h("p", {}, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

function testRows(tests) {
  return tests.map(({ node: t }) =>
    h(
      "tr",
      { "data-test": t.id },
      h("td", {}, when(t.createdAt)),
      h("td", {}, t.reason),
      h("td", {}, badge(t.state)),
      h("td", {}, h("ul", { class: "sides" }, sideResult("smtp", t.smtp), sideResult("imap", t.imap)),
        t.smtp?.hint ? h("p", { class: "hint" }, t.smtp.hint) : null,
        t.imap?.hint ? h("p", { class: "hint" }, t.imap.hint) : null),
      h("td", { class: "round-trip" }, t.roundTrip ? [badge(t.roundTrip.ok ? "OK" : t.roundTrip.code), ` ${t.roundTrip.message}`] : "not run"),
    ),
  );
}

function dnsChecklist(setup) {
  if (!setup) return h("p", {}, "Not checked yet.");
  const items = ["mx", "spf", "dkim", "dmarc"].map((kind) => {
    const check = setup[kind];
    return h(
      "li",
      { "data-record": kind },
      h("strong", {}, kind.toUpperCase()), " ", badge(check.state), " ", check.message,
      check.records.length ? h("ul", { class: "records" }, check.records.map((r) => h("li", {}, h("code", {}, r)))) : null,
    );
  });
  return [
    h("p", {}, `Domain ${setup.domain}: `, badge(setup.overall), ` checked ${when(setup.checkedAt)}`),
    h("ol", { class: "checklist" }, items),
  ];
}

export async function inboxPage(id) {
  const sections = { head: h("div"), settings: h("div"), tests: h("div"), dns: h("div"), audit: h("div"), messages: h("div") };
  const note = h("p", { class: "note", role: "status" });
  const live = h("section", { class: "card verification", hidden: true });
  let stopTest = () => {};
  let inbox = null;

  async function load() {
    inbox = (await gql(READ, { id })).emailInbox;
    if (!inbox) return replace(sections.head, h("h1", { tabindex: "-1" }, "No such inbox"));
    replace(sections.head, h("h1", { tabindex: "-1" }, inbox.name, " ", badge(inbox.status, "live-status")),
      inbox.statusReason ? h("p", {}, inbox.statusReason) : null);
    replace(sections.settings, facts([
      ["Email", inbox.email], ["Sender name", inbox.displayName], ["Provider", inbox.provider],
      ["Department", inbox.department], ["Switched on", inbox.active ? "yes" : "no"],
      ["Sending", inbox.sendingEnabled ? `on, ${inbox.dailySendLimit} a day` : "off"],
      ["Receiving", inbox.receiving.enabled ? `${inbox.receiving.state}, folders ${inbox.receiving.folders.join(", ")}` : "off"],
      ["Tags", inbox.tags.join(", ")], ["Last verified", when(inbox.lastVerifiedAt)],
    ]), h("div", { class: "columns" }, serverFacts("SMTP", inbox.smtp), serverFacts("IMAP", inbox.imap)));
    replace(sections.tests, table("Connection tests, newest first", ["When", "Why", "State", "Sides", "Round trip"], testRows(inbox.connectionTests.edges), "No test yet."));
    replace(sections.dns, dnsChecklist(inbox.setupStatus));
  }

  async function loadAudit() {
    try {
      const edges = (await gql(AUDIT, { id })).auditLog.edges;
      replace(sections.audit, table("Audit trail", ["When", "What", "Key", "From", "Details"], edges.map(({ node: e }) =>
        h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.action), h("td", {}, e.apiKeyPrefix || ""),
          h("td", {}, e.clientAddress || ""), h("td", {}, h("code", {}, JSON.stringify(e.details))))), "Nothing recorded."));
    } catch (error) {
      replace(sections.audit, h("p", {}, `Not shown: ${error.message}`));
    }
  }

  async function loadMessages(after = null) {
    const data = (await gql(MESSAGES, { id, after })).messages;
    const rows = data.edges.map(({ node: m }) =>
      h("tr", {}, h("td", {}, when(m.receivedAt)), h("td", {}, m.from ? m.from.name || m.from.address : ""),
        h("td", {}, h("details", {}, h("summary", {}, m.subject || "(no subject)"), h("pre", { class: "body" }, m.textBody || "")))));
    const more = data.pageInfo.hasNextPage
      ? h("button", { type: "button", onclick: () => loadMessages(data.pageInfo.endCursor) }, "Older messages")
      : null;
    replace(sections.messages, table("Received messages, newest first", ["Received", "From", "Subject"], rows, "No message received yet."), more);
  }

  async function run(mutation, variables, field, started) {
    replace(note, started);
    const payload = (await gql(mutation, variables))[field];
    if (payload.message) return replace(note, payload.message);
    if (field === "checkDomainSetup") {
      replace(note, "DNS checked.");
      return load();
    }
    live.hidden = false;
    stopTest();
    stopTest = verification(id, live, null);
  }

  const buttons = h(
    "div",
    { class: "actions" },
    h("a", { class: "button", href: `#/inboxes/${encodeURIComponent(id)}/edit` }, "Edit settings"),
    h("button", { type: "button", onclick: () => run(TEST, { id, roundTrip: false }, "testConnection", "Testing the connection…") }, "Test connection"),
    h("button", { type: "button", onclick: () => run(TEST, { id, roundTrip: true }, "testConnection", "Sending a message to itself…") }, "Round-trip test"),
    h("button", { type: "button", onclick: () => run(CHECK, { id }, "checkDomainSetup", "Checking DNS…") }, "Check DNS"),
  );
  await Promise.all([load(), loadAudit(), loadMessages()]);
  const card = (title, body) => h("section", { class: "card" }, h("h2", {}, title), body);
  const node = h("div", { class: "stack" }, sections.head, buttons, note, live,
    card("Settings", sections.settings), card("Connection tests", sections.tests),
    card("DNS setup", sections.dns), card("Received messages", sections.messages), card("Audit trail", sections.audit));
  // Every change to the inbox (a status, a finished test) re-reads the page's parts.
  let seen = inbox?.version;
  const stopStatus = subscribe(STATUS, { id }, ({ emailInboxStatus: now }) => {
    if (now.version === seen) return;
    seen = now.version;
    load();
    loadAudit();
  });
  return { node, dispose: () => (stopStatus(), stopTest()) };
}
