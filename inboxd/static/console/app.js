// The console's shell: sign-in, the header with the workspace, and a hash router whose views
// each return { node, dispose } (dispose ends their subscriptions).
import { ApiError, gql, session, subscribe } from "./api.js";
import { h, replace } from "./dom.js";
import { inboxForm } from "./form.js";
import { inboxPage } from "./inbox.js";
import { inboxList } from "./inboxes.js";
import { messagePage } from "./messages.js";
import { oauthAppsPage } from "./oauth.js";

const VIEWER = `query Viewer { viewer { workspace { id name maxInboxes subscriptionActive }
  permissions inboxUsage inboxLimit } }`;

// Creating or deleting an inbox (here, in another tab, or through the API) changes the usage.
const USAGE = `subscription Usage { emailInboxEvents { kind inboxId } }`;

const main = document.getElementById("main");
const header = document.getElementById("workspace");
let current = null;
let viewer = null;
let navigation = 0; // a route still loading when the next one starts is dropped
let stopUsage = null;

function signInView(problem) {
  const input = h("input", {
    id: "api-key",
    name: "apiKey",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "api-key-help api-key-error",
    "aria-invalid": problem ? "true" : null,
  });
  const form = h(
    "form",
    { class: "card narrow", onsubmit: (event) => signIn(event, input) },
    h("h1", { tabindex: "-1" }, "Sign in"),
    h(
      "div",
      { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("p", { id: "api-key-help", class: "help" }, "Kept in this tab only; closing it signs you out."),
      h("p", { id: "api-key-error", class: "error" }, problem || ""),
    ),
    h("button", { type: "submit" }, "Sign in"),
  );
  return { node: form, focus: input };
}

async function signIn(event, input) {
  event.preventDefault();
  session.signIn(input.value.trim());
  viewer = null;
  await route();
}

function renderHeader() {
  if (!viewer) return replace(header);
  const { workspace, inboxUsage, inboxLimit } = viewer;
  replace(
    header,
    h("span", { class: "workspace-name" }, workspace.name),
    h("span", { class: "usage" }, `${inboxUsage} of ${inboxLimit} inboxes`),
    h(
      "button",
      {
        type: "button",
        class: "link",
        onclick: () => {
          stopUsage = null; // signing out closes the socket and its subscriptions
          session.signOut();
          viewer = null;
          location.hash = "#/";
          route();
        },
      },
      "Sign out",
    ),
  );
}

export async function refreshViewer() {
  viewer = (await gql(VIEWER)).viewer;
  renderHeader();
  document.dispatchEvent(new CustomEvent("inboxd:viewer", { detail: viewer }));
  stopUsage ??= subscribe(USAGE, {}, ({ emailInboxEvents: event }) => {
    if (["CREATED", "DELETED", "RESYNC"].includes(event.kind)) refreshViewer().catch(() => {});
  });
  return viewer;
}

function pick(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query);
  if (parts[0] === "oauth-apps") return () => oauthAppsPage();
  if (parts[0] !== "inboxes" || parts.length === 1) return () => inboxList(viewer, params);
  if (parts[1] === "new") return () => inboxForm(null);
  if (parts[2] === "edit") return () => inboxForm(decodeURIComponent(parts[1]));
  if (parts[2] === "messages" && parts[3]) return () => messagePage(decodeURIComponent(parts[1]), decodeURIComponent(parts[3]));
  return () => inboxPage(decodeURIComponent(parts[1]), params);
}

async function route() {
  const mine = ++navigation;
  current?.dispose?.();
  current = null;
  if (!session.key) {
    renderHeader();
    const view = signInView();
    replace(main, view.node);
    return;
  }
  try {
    if (!viewer) await refreshViewer();
  } catch (error) {
    if (mine !== navigation) return;
    const refused = error instanceof ApiError;
    stopUsage = null;
    session.signOut();
    viewer = null;
    renderHeader();
    const view = signInView(refused ? error.message : `inboxd did not answer: ${error.message}`);
    replace(main, view.node);
    view.focus.focus();
    return;
  }
  const view = await pick(location.hash)();
  if (mine !== navigation) return view.dispose?.();
  current = view;
  replace(main, view.node);
  main.dataset.route = location.hash || "#/";
  // Keyboard and screen-reader users land on the new page's heading.
  main.querySelector("h1")?.focus();
  performance.mark("console-rendered");
}

window.addEventListener("hashchange", route);
route();

// The skip link must not change the hash (the router reads it): it moves focus instead.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
