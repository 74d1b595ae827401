// OAuth: the workspace's Google and Microsoft apps (the client secret is write-only: only
// whether one is stored is shown), connecting an account from the new-inbox page, and
// reconnecting an inbox whose grant the provider refused. Connecting leaves the console for the
// provider's sign-in; its callback page links back to the inbox here.
import { gql } from "./api.js";
import { h, replace } from "./dom.js";

const APP = "id provider clientId hasClientSecret tenant redirectUri updatedAt";
const APPS = `query Apps { oauthApps { ${APP} } }`;
const CONFIGURE = `mutation Configure($input: ConfigureOAuthAppInput!) { configureOAuthApp(input: $input) {
  __typename ... on ConfigureOAuthAppSuccess { app { ${APP} } }
  ... on ValidationError { message fields { field message } } } }`;
const START = `mutation Start($provider: OAuthProvider!, $email: String, $inboxId: ID,
  $smtp: OAuthServerInput, $imap: OAuthServerInput) {
  startOAuthConnection(provider: $provider, email: $email, inboxId: $inboxId, smtp: $smtp, imap: $imap) {
  __typename ... on StartOAuthConnectionSuccess { authorizationUrl }
  ... on ValidationError { message fields { field message } } ... on NotFound { message } } }`;
export const PROVIDERS = { GOOGLE: "Google", MICROSOFT: "Microsoft" };
const SECURITY = [["", "The provider's"], ["TLS", "TLS"], ["STARTTLS", "STARTTLS"]];

// A labelled input with its help and error slots, keyed by its GraphQL input path (the name is
// prefixed: the inbox form on the same page has its own "email").
function field(prefix, path, label, attrs = {}, help = "") {
  const id = `${prefix}-${path.replace(".", "-")}`;
  const common = { id, name: `${prefix}.${path}`, "aria-describedby": `${id}-help ${id}-error` };
  const { options, ...rest } = attrs;
  const input = options
    ? h("select", common, options.map(([value, text]) => h("option", { value }, text)))
    : h("input", { ...common, type: "text", autocomplete: "off", ...rest });
  const node = h(
    "div",
    { class: "field", "data-field": path },
    h("label", { for: id }, label),
    input,
    h("p", { id: `${id}-help`, class: "help" }, help),
    h("div", { id: `${id}-error`, class: "error" }),
  );
  return { node, input, help: node.children[2], error: node.children[3] };
}

// Shows a ValidationError: each issue at its field (focus on the first), the rest in `summary`.
function showProblems(payload, fields, summary) {
  for (const f of Object.values(fields)) {
    f.input.removeAttribute("aria-invalid");
    replace(f.error);
  }
  replace(summary, payload ? h("p", {}, payload.message) : "");
  let first = null;
  for (const issue of payload?.fields || []) {
    const at = fields[issue.field];
    if (!at) {
      summary.append(h("p", {}, `${issue.field}: ${issue.message}`));
      continue;
    }
    at.input.setAttribute("aria-invalid", "true");
    at.error.append(h("p", {}, issue.message));
    first ??= at.input;
  }
  if (first) first.focus();
  else if (payload) summary.setAttribute("tabindex", "-1"), summary.focus();
}

function appForm(provider, app) {
  const prefix = `oauth-${provider.toLowerCase()}`;
  const fields = {
    clientId: field(prefix, "clientId", "Client ID"),
    clientSecret: field(prefix, "clientSecret", "Client secret", { type: "password", autocomplete: "new-password" }),
    redirectUri: field(prefix, "redirectUri", "Redirect URI", { type: "url" }, "Register exactly this with the provider."),
  };
  if (provider === "MICROSOFT") {
    fields.tenant = field(prefix, "tenant", "Tenant", {}, "The Entra tenant id or domain; empty: common.");
  }
  const summary = h("div", { class: "summary", role: "alert" });
  const saved = h("p", { class: "note", role: "status" });

  function load(current) {
    fields.clientId.input.value = current?.clientId || "";
    fields.clientSecret.input.value = "";
    // This inboxd's own callback, as the browser reaches it.
    fields.redirectUri.input.value = current?.redirectUri || `${location.origin}/oauth/callback`;
    if (fields.tenant) fields.tenant.input.value = current?.tenant || "";
    replace(fields.clientSecret.help, current?.hasClientSecret
      ? "A secret is stored (write-only): left blank, it is kept."
      : "No secret stored yet.");
  }

  async function save(event) {
    event.preventDefault();
    replace(saved);
    const input = { provider, clientId: fields.clientId.input.value.trim(), redirectUri: fields.redirectUri.input.value.trim() };
    const secret = fields.clientSecret.input.value;
    if (secret) input.clientSecret = secret;
    if (fields.tenant) input.tenant = fields.tenant.input.value.trim() || null;
    try {
      const payload = (await gql(CONFIGURE, { input })).configureOAuthApp;
      if (payload.__typename !== "ConfigureOAuthAppSuccess") return showProblems(payload, fields, summary);
      showProblems(null, fields, summary);
      load(payload.app);
      replace(saved, `${PROVIDERS[provider]} app saved.`);
    } catch (error) {
      replace(summary, h("p", {}, `Not saved: ${error.message}`));
    }
  }

  load(app);
  const headingId = `${prefix}-heading`;
  return h(
    "section",
    { class: "card", "aria-labelledby": headingId, "data-provider": provider },
    h("h2", { id: headingId }, PROVIDERS[provider]),
    h(
      "form",
      { novalidate: true, onsubmit: save },
      Object.values(fields).map((f) => f.node),
      summary,
      h("div", { class: "actions" }, h("button", { type: "submit" }, `Save the ${PROVIDERS[provider]} app`), saved),
    ),
  );
}

export async function oauthAppsPage() {
  const apps = (await gql(APPS)).oauthApps;
  const node = h(
    "div",
    { class: "stack" },
    h("h1", { tabindex: "-1" }, "OAuth apps"),
    h("p", {}, "The workspace's own OAuth clients at Google and Microsoft, with which its accounts connect as inboxes without a password."),
    Object.keys(PROVIDERS).map((provider) => appForm(provider, apps.find((a) => a.provider === provider))),
  );
  return { node };
}

// startOAuthConnection, then off to the provider's sign-in. Returns the refusal, if any.
export async function startConnection(variables) {
  const payload = (await gql(START, variables)).startOAuthConnection;
  if (payload.__typename !== "StartOAuthConnectionSuccess") return payload;
  location.assign(payload.authorizationUrl);
  return null;
}

// The new-inbox page's "Connect with Google / Microsoft": an optional email hint and,
// folded away, servers replacing the provider's (a sovereign cloud, a relay).
export function connectPanel() {
  const prefix = "connect";
  const fields = { email: field(prefix, "email", "Email (optional)", { type: "email" }, "Signs in as this account.") };
  for (const side of ["smtp", "imap"]) {
    const label = side.toUpperCase();
    fields[`${side}.host`] = field(prefix, `${side}.host`, `${label} server`);
    fields[`${side}.port`] = field(prefix, `${side}.port`, `${label} port`, { type: "number" });
    fields[`${side}.security`] = field(prefix, `${side}.security`, `${label} encryption`, { options: SECURITY });
  }
  const summary = h("div", { class: "summary", role: "alert" });

  function server(side) {
    const host = fields[`${side}.host`].input.value.trim();
    const port = fields[`${side}.port`].input.value.trim();
    const security = fields[`${side}.security`].input.value;
    if (!host && !port && !security) return null;
    return { host: host || null, port: port ? Number(port) : null, security: security || null };
  }

  async function connect(provider) {
    showProblems(null, fields, summary);
    try {
      const email = fields.email.input.value.trim() || null;
      const refused = await startConnection({ provider, email, smtp: server("smtp"), imap: server("imap") });
      if (refused) showProblems(refused, fields, summary);
    } catch (error) {
      replace(summary, h("p", {}, `Not started: ${error.message}`));
    }
  }

  const servers = ["smtp", "imap"].flatMap((side) => ["host", "port", "security"].map((k) => fields[`${side}.${k}`].node));
  return h(
    "section",
    { class: "card", "aria-labelledby": "connect-heading" },
    h("h2", { id: "connect-heading" }, "Connect with OAuth"),
    h("p", {}, "Gmail and Microsoft 365 accounts sign in at their provider; no password is stored. ",
      h("a", { href: "#/oauth-apps" }, "Set up the OAuth apps"), " first."),
    fields.email.node,
    h("details", {}, h("summary", {}, "Other servers than the provider's"), servers),
    summary,
    h(
      "div",
      { class: "actions" },
      Object.entries(PROVIDERS).map(([provider, name]) =>
        h("button", { type: "button", "data-connect": provider, onclick: () => connect(provider) }, `Connect with ${name}`)),
    ),
  );
}
