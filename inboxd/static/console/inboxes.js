// The workspace and its inboxes: search, filters, pages, and status badges kept live by the
// emailInboxEvents subscription (no polling).
import { gql, subscribe } from "./api.js";
import { badge, h, replace, when } from "./dom.js";

const LIST = `query Inboxes($first: Int!, $after: String, $filter: EmailInboxFilter) {
  emailInboxes(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id name email status statusReason department active version lastVerifiedAt } }
  } }`;
const EVENTS = `subscription Events { emailInboxEvents { kind inboxId version status
  inbox { id status statusReason version } } }`;
const STATUSES = ["PENDING", "VERIFYING", "ACTIVE", "FAILED"];

function workspacePanel(viewer) {
  const { workspace, permissions, inboxUsage, inboxLimit } = viewer;
  return h(
    "section",
    { class: "card", "aria-labelledby": "workspace-heading" },
    h("h2", { id: "workspace-heading" }, "Workspace"),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Name"),
      h("dd", {}, workspace.name),
      h("dt", {}, "Subscription"),
      h("dd", {}, workspace.subscriptionActive ? "active" : "inactive: inboxes cannot be added"),
      h("dt", {}, "Inboxes"),
      h(
        "dd",
        {},
        h("meter", { id: "usage", min: 0, max: inboxLimit, value: inboxUsage, "aria-label": "Inbox usage" }),
        ` ${inboxUsage} of ${inboxLimit} used`,
      ),
      h("dt", {}, "Permissions"),
      h("dd", {}, h("ul", { class: "tags" }, permissions.map((p) => h("li", {}, p)))),
    ),
  );
}

function field(id, label, control) {
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
}

export function inboxList(viewer, params) {
  const state = {
    first: Math.max(1, Math.min(100, Number(params.get("size")) || 20)),
    cursors: [null], // the `after` of each page seen; the last one is the current page
    filter: {},
    rows: new Map(),
    loads: 0, // loads started: only the newest one's rows are shown
    loaded: 0, // the newest load shown
    held: [], // status events that came while that load was on its way
  };
  const status = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
  const body = h("tbody");
  const caption = h("caption");
  const previous = h("button", { type: "button", onclick: () => page(-1) }, "Previous page");
  const next = h("button", { type: "button", onclick: () => page(1) }, "Next page");
  const position = h("span", { class: "position" });

  const filters = h(
    "form",
    { class: "filters", role: "search", onsubmit: (event) => applyFilters(event) },
    field("search", "Search", h("input", { name: "search", type: "search", placeholder: "name, email" })),
    field("status-filter", "Status", select("status", [["", "Any"], ...STATUSES.map((s) => [s, s])], "")),
    field("department-filter", "Department", h("input", { name: "department" })),
    field("tag-filter", "Tag", h("input", { name: "tag" })),
    field("active-filter", "Switched", select("active", [["", "On or off"], ["true", "On"], ["false", "Off"]], "")),
    h("button", { type: "submit" }, "Apply"),
  );

  function applyFilters(event) {
    event.preventDefault();
    const data = new FormData(filters);
    state.filter = {};
    for (const [name, value] of data) {
      if (value === "") continue;
      state.filter[name] = name === "active" ? value === "true" : value;
    }
    state.cursors = [null];
    load();
  }

  function row(inbox) {
    const tr = h(
      "tr",
      { "data-inbox": inbox.id },
      h("td", {}, h("a", { href: `#/inboxes/${encodeURIComponent(inbox.id)}` }, inbox.name)),
      h("td", { "data-label": "Email" }, inbox.email),
      h("td", { "data-label": "Status", class: "status" }, badge(inbox.status)),
      h("td", { "data-label": "Department" }, inbox.department || ""),
      h("td", { "data-label": "Verified" }, when(inbox.lastVerifiedAt)),
    );
    tr.title = inbox.statusReason || "";
    state.rows.set(inbox.id, { tr, inbox });
    return tr;
  }

  async function load() {
    // An event that came before this query left is in its answer; one that comes while it is
    // on its way may not be (a status that changed just after the read), so it is held and
    // applied to the new rows, where the version check drops what the answer already had.
    const mine = ++state.loads;
    state.held = [];
    const after = state.cursors.at(-1);
    const data = await gql(LIST, { first: state.first, after, filter: state.filter });
    if (mine !== state.loads) return; // a newer load is on its way
    state.loaded = mine;
    const { edges, totalCount, pageInfo } = data.emailInboxes;
    state.rows.clear();
    state.endCursor = pageInfo.endCursor;
    replace(caption, `Inboxes (${totalCount})`);
    replace(
      body,
      edges.length
        ? edges.map((edge) => row(edge.node))
        : h("tr", {}, h("td", { colspan: 5 }, "No inbox matches.")),
    );
    const start = (state.cursors.length - 1) * state.first;
    replace(position, edges.length ? `${start + 1}–${start + edges.length} of ${totalCount}` : "");
    previous.disabled = state.cursors.length === 1;
    next.disabled = !pageInfo.hasNextPage;
    state.held.splice(0).forEach(showStatus);
  }

  function page(step) {
    if (step > 0) state.cursors.push(state.endCursor);
    else state.cursors.pop();
    load();
  }

  function onEvent({ emailInboxEvents: event }) {
    if (["CREATED", "DELETED", "RESYNC"].includes(event.kind)) return load();
    if (state.loaded !== state.loads) return state.held.push(event);
    showStatus(event);
  }

  function showStatus(event) {
    const shown = state.rows.get(event.inboxId);
    if (!shown || !event.status || (event.version ?? 0) < shown.inbox.version) return;
    shown.inbox = { ...shown.inbox, status: event.status, version: event.version };
    shown.tr.querySelector(".status").replaceChildren(badge(event.status));
    shown.tr.title = event.inbox?.statusReason || "";
    replace(status, `${shown.inbox.name} is ${event.status}`);
  }

  const stop = subscribe(EVENTS, {}, onEvent);
  // The usage shown here follows the header's (app.js re-reads it when an inbox comes or goes).
  const onViewer = ({ detail }) => panel.replaceWith((panel = workspacePanel(detail)));
  document.addEventListener("inboxd:viewer", onViewer);
  let panel = workspacePanel(viewer);
  const node = h(
    "div",
    { class: "stack" },
    h("h1", { tabindex: "-1" }, "Inboxes"),
    panel,
    h(
      "section",
      { class: "card", "aria-labelledby": "list-heading" },
      h("h2", { id: "list-heading" }, "All inboxes"),
      h("p", {}, h("a", { class: "button", href: "#/inboxes/new" }, "New inbox")),
      filters,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "inboxes" },
          caption,
          h(
            "thead",
            {},
            h("tr", {}, ["Name", "Email", "Status", "Department", "Last verified"].map((t) => h("th", { scope: "col" }, t))),
          ),
          body,
        ),
      ),
      h("nav", { class: "pager", "aria-label": "Pages" }, previous, position, next),
      status,
    ),
  );
  const dispose = () => (stop(), document.removeEventListener("inboxd:viewer", onViewer));
  return load().then(() => ({ node, dispose }));
}
