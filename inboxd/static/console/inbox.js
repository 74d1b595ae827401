// One inbox: settings (never a password), its connection tests in pages with each side's
// details, the DNS checklist, test buttons, received messages, compose and the outbox, and the
// audit trail. The status and history follow the inbox live through emailInboxStatus.
import { gql, subscribe } from "./api.js";
import { badge, h, replace, when } from "./dom.js";
import { composer } from "./compose.js";
import { messageList } from "./messages.js";
import { PROVIDERS, startConnection } from "./oauth.js";
import { PROBE, sideResult, verification } from "./verify.js";

const SERVER = "host port security username hasPassword tlsCertificateSha256";
const RECORD = "state records message";
const READ = `query Page($id: ID!) { emailInbox(id: $id) {
  id name email displayName department description active provider status statusReason
  version dailySendLimit sendingEnabled tags replyTo lastVerifiedAt
  authMethod oauth { provider managed accessTokenExpiresAt reauthRequiredAt }
  smtp { ${SERVER} } imap { ${SERVER} } receiving { enabled folders state lastCheckAt }
  setupStatus { domain overall checkedAt mx { ${RECORD} } spf { ${RECORD} } dkim { ${RECORD} } dmarc { ${RECORD} } } } }`;
const TESTS = `query Tests($id: ID!, $first: Int!, $after: String) { emailInbox(id: $id) {
  connectionTests(first: $first, after: $after) { pageInfo { hasNextPage endCursor }
  edges { node { id state reason attempts createdAt startedAt finishedAt error
    smtp { ${PROBE} } imap { ${PROBE} } roundTrip { ok code message hint delayMs } } } } } }`;
const AUDIT = `query Audit($id: ID!) { auditLog(inboxId: $id, first: 20) { edges { node {
  id action apiKeyPrefix clientAddress details at } } } }`;
const TEST = `mutation Test($id: ID!, $roundTrip: Boolean!) { testConnection(id: $id, roundTrip: $roundTrip) {
  __typename ... on UserError { message } } }`;
const CHECK = `mutation Check($id: ID!) { checkDomainSetup(id: $id) { __typename ... on UserError { message } } }`;
const STATUS = `subscription Live($id: ID!) { emailInboxStatus(id: $id) { id status version } }`;

function facts(pairs, { skipEmpty = false } = {}) {
  if (skipEmpty) pairs = pairs.filter(([, value]) => value !== null && value !== undefined && value !== "");
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

function signIn(inbox) {
  const oauth = inbox.oauth;
  if (inbox.authMethod !== "OAUTH2" || !oauth) return [["Sign-in", "password"]];
  const who = oauth.provider ? `OAuth with ${PROVIDERS[oauth.provider]}` : "OAuth";
  return [
    ["Sign-in", `${who}, ${oauth.managed ? "tokens refreshed by inboxd" : "access token given through the API"}`],
    ["Access token expires", when(oauth.accessTokenExpiresAt)],
    oauth.reauthRequiredAt ? ["Reconnect needed since", when(oauth.reauthRequiredAt)] : null,
  ].filter(Boolean);
}

// The provider refused the grant: a new consent gives the same inbox new tokens.
function reconnect(inbox, note) {
  const provider = inbox.oauth?.provider;
  const refused = inbox.status === "FAILED" && (inbox.oauth.reauthRequiredAt || (inbox.statusReason || "").includes("REAUTH_REQUIRED"));
  if (!provider || !refused) return null;
  const start = async () => {
    replace(note, `Opening the ${PROVIDERS[provider]} sign-in…`);
    try {
      const problem = await startConnection({ provider, inboxId: inbox.id });
      if (problem) replace(note, problem.message, ...(problem.fields || []).map((f) => ` ${f.field}: ${f.message}`));
    } catch (error) {
      replace(note, `Not started: ${error.message}`);
    }
  };
  return h(
    "p",
    { class: "reconnect" },
    `${PROVIDERS[provider]} no longer accepts this inbox's sign-in. `,
    h("button", { type: "button", onclick: start }, `Reconnect with ${PROVIDERS[provider]}`),
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

function sideDetails(label, result) {
  if (!result) return h("li", {}, `${label}: not probed`);
  const tls = result.tls;
  return h(
    "li",
    {},
    h("strong", {}, label),
    facts([
      ["Result", result.ok ? "ok" : `${result.code}: ${result.message}`],
      ["Time", result.latencyMs == null ? "" : `${result.latencyMs} ms`],
      ["Field at fault", result.field],
      ["What to fix", result.hint],
      ["TLS", tls ? `${tls.version || "?"}, certificate ${tls.trusted ? "trusted" : "not trusted"}${tls.pinned ? ", pinned" : ""}` : "none"],
      ["Certificate SHA-256", tls?.sha256Fingerprint ? h("code", { class: "fingerprint" }, tls.sha256Fingerprint) : ""],
    ], { skipEmpty: true }),
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
      h(
        "td",
        {},
        h("ul", { class: "sides" }, sideResult("smtp", t.smtp), sideResult("imap", t.imap)),
        h(
          "details",
          { class: "test-details" },
          h("summary", {}, "Details"),
          facts([
            ["Started", when(t.startedAt)],
            ["Finished", when(t.finishedAt)],
            ["Attempts", String(t.attempts)],
            ["Error", t.error],
          ], { skipEmpty: true }),
          h("ul", { class: "side-details" }, sideDetails("SMTP", t.smtp), sideDetails("IMAP", t.imap)),
        ),
      ),
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

export async function inboxPage(id, params = new URLSearchParams()) {
  const sections = { head: h("div"), settings: h("div"), tests: h("div"), dns: h("div"), audit: h("div") };
  const size = (name, fallback) => Math.max(1, Math.min(100, Number(params.get(name)) || fallback));
  const tests = { first: size("tests", 10), cursors: [null], endCursor: null, loads: 0 };
  const newer = h("button", { type: "button", onclick: () => testPage(-1) }, "Newer tests");
  const older = h("button", { type: "button", onclick: () => testPage(1) }, "Older tests");
  const testPosition = h("span", { class: "position" });
  const note = h("p", { class: "note", role: "status" });
  const live = h("section", { class: "card verification", hidden: true });
  let stopTest = () => {};
  let inbox = null;

  async function load() {
    inbox = (await gql(READ, { id })).emailInbox;
    if (!inbox) return replace(sections.head, h("h1", { tabindex: "-1" }, "No such inbox"));
    replace(sections.head, h("h1", { tabindex: "-1" }, inbox.name, " ", badge(inbox.status, "live-status")),
      inbox.statusReason ? h("p", {}, inbox.statusReason) : null, reconnect(inbox, note));
    replace(sections.settings, facts([
      ["Email", inbox.email], ["Sender name", inbox.displayName], ["Provider", inbox.provider],
      ["Department", inbox.department], ["Switched on", inbox.active ? "yes" : "no"],
      ["Sending", inbox.sendingEnabled ? `on, ${inbox.dailySendLimit} a day` : "off"],
      ["Receiving", inbox.receiving.enabled ? `${inbox.receiving.state}, folders ${inbox.receiving.folders.join(", ")}` : "off"],
      ["Tags", inbox.tags.join(", ")], ["Last verified", when(inbox.lastVerifiedAt)], ...signIn(inbox),
    ]), h("div", { class: "columns" }, serverFacts("SMTP", inbox.smtp), serverFacts("IMAP", inbox.imap)));
    replace(sections.dns, dnsChecklist(inbox.setupStatus));
  }

  async function loadTests() {
    const mine = ++tests.loads;
    const data = (await gql(TESTS, { id, first: tests.first, after: tests.cursors.at(-1) })).emailInbox;
    if (!data || mine !== tests.loads) return;
    const { edges, pageInfo } = data.connectionTests;
    tests.endCursor = pageInfo.endCursor;
    const start = (tests.cursors.length - 1) * tests.first;
    replace(sections.tests, table("Connection tests, newest first", ["When", "Why", "State", "Sides", "Round trip"], testRows(edges), "No test yet."));
    replace(testPosition, edges.length ? `${start + 1}–${start + edges.length}` : "");
    newer.disabled = tests.cursors.length === 1;
    older.disabled = !pageInfo.hasNextPage;
  }

  function testPage(step) {
    if (step > 0) tests.cursors.push(tests.endCursor);
    else tests.cursors.pop();
    loadTests();
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
  const messages = messageList(id, size("messages", 20));
  const [, , , , sending] = await Promise.all([load(), loadTests(), loadAudit(), messages.ready, composer(id, params.get("reply"))]);
  const card = (title, ...body) => h("section", { class: "card", id: title.toLowerCase().replaceAll(" ", "-") }, h("h2", {}, title), ...body);
  const node = h("div", { class: "stack" }, sections.head, buttons, note, live,
    card("Settings", sections.settings),
    card("Connection tests", sections.tests, h("nav", { class: "pager", "aria-label": "Test pages" }, newer, testPosition, older)),
    card("DNS setup", sections.dns), card("Received messages", messages.node),
    card("Send a message", sending.compose), card("Outbox", sending.outbox), card("Audit trail", sections.audit));
  // Not verified yet (just created, or just reconnected with OAuth): its verification is shown
  // as it happens.
  if (inbox && ["PENDING", "VERIFYING"].includes(inbox.status)) {
    live.hidden = false;
    stopTest = verification(id, live, null);
  }
  // Every change to the inbox (a status, a finished test) re-reads the page's parts.
  let seen = inbox?.version;
  const stopStatus = subscribe(STATUS, { id }, ({ emailInboxStatus: now }) => {
    if (now.version === seen) return;
    seen = now.version;
    load();
    if (tests.cursors.length === 1) loadTests(); // a new test is newest: it joins the first page
    loadAudit();
  });
  return { node, dispose: () => (stopStatus(), stopTest(), messages.dispose(), sending.dispose()) };
}
