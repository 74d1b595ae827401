// Create and edit an inbox: discovery fills the servers in (saying from where), a refused
// input is shown at its field, and after saving the verification is watched live; a failed
// side's hint lands at the field to fix, and an untrusted certificate can be pinned here.
import { gql } from "./api.js";
import { h, replace } from "./dom.js";
import { domId, FIELDS, GROUPS, put, read, show, valueOf } from "./fields.js";
import { connectPanel } from "./oauth.js";
import { verification } from "./verify.js";

const SERVER = "host port security username hasPassword tlsCertificateSha256";
const INBOX = `id version name email displayName description senderInfo department active
  provider status smtp { ${SERVER} } imap { ${SERVER} } dailySendLimit sendingEnabled signature
  tags replyTo deleteMessagePolicy notifyOnNewMessages notificationEmail dkimSelectors timeZone
  receiving { enabled folders backfillDays } sending { copyToSentFolder }`;
const READ = `query Inbox($id: ID!) { emailInbox(id: $id) { ${INBOX} } }`;
const DISCOVER = `query Discover($email: String!) { discoverMailSettings(email: $email) {
  provider errors smtp { host port security source confidence }
  imap { host port security source confidence } } }`;
const PROBLEMS = `... on ValidationError { fields { field message } }
  ... on DuplicateEmailInbox { email existingId }`;
const CREATE = `mutation Create($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  __typename ... on CreateEmailInboxSuccess { inbox { ${INBOX} } warnings { field message } }
  ... on UserError { code message } ${PROBLEMS} ... on InboxLimitReached { maxInboxes } } }`;
const UPDATE = `mutation Update($id: ID!, $input: UpdateEmailInboxInput!, $version: Int) {
  updateEmailInbox(id: $id, input: $input, expectedVersion: $version) {
  __typename ... on UpdateEmailInboxSuccess { inbox { ${INBOX} } warnings { field message } }
  ... on UserError { code message } ${PROBLEMS} ... on VersionConflict { currentVersion } } }`;
const SOURCES = {
  PRESET_DOMAIN: "the provider's preset (by domain)",
  PRESET_MX: "the provider's preset (by the domain's MX host)",
  SRV: "the domain's SRV records",
  CONVENTIONAL: "conventional host names (a guess)",
};
const DEFAULTS = { active: true, sendingEnabled: true, "receiving.enabled": true };

function control([path, , type, options]) {
  const attrs = { id: domId(path), name: path };
  if (type === "select" || type === "yesno") {
    return h("select", attrs, options.map(([value, text]) => h("option", { value }, text)));
  }
  if (type === "textarea") return h("textarea", { ...attrs, rows: 3 });
  const inputType = type === "list" ? "text" : type;
  return h("input", { ...attrs, type: inputType, autocomplete: type === "password" ? "new-password" : "off" });
}

export async function inboxForm(id) {
  let inbox = id ? (await gql(READ, { id })).emailInbox : null;
  const controls = new Map();
  const slots = new Map(); // "smtp.password-error" -> its element (before the form is attached)
  const dirty = new Set();
  const discovered = new Set();
  const summary = h("div", { class: "summary", role: "alert" });
  const watch = h("section", { class: "card verification", "aria-labelledby": "verify-heading", hidden: true });
  let stopWatching = () => {};

  function slot(path, kind) {
    return slots.get(`${path}-${kind}`);
  }

  function fieldNode(spec) {
    const [path, label, type, , help] = spec;
    const input = control(spec);
    const ids = `${domId(path)}-help ${domId(path)}-source ${domId(path)}-error`;
    input.setAttribute("aria-describedby", ids);
    const picked = type === "checkbox" || type === "select" || type === "yesno";
    input.addEventListener(picked ? "change" : "input", () => {
      dirty.add(path);
      discovered.delete(path);
      replace(slot(path, "source"));
    });
    controls.set(path, { input, type });
    const parts = [
      h("label", { for: domId(path) }, label),
      h("p", { id: `${domId(path)}-help`, class: "help" }, help || ""),
      h("p", { id: `${domId(path)}-source`, class: "source" }),
      h("div", { id: `${domId(path)}-error`, class: "error" }),
    ];
    slots.set(`${path}-source`, parts[2]);
    slots.set(`${path}-error`, parts[3]);
    const wrap = h("div", { class: `field${type === "checkbox" ? " check" : ""}`, "data-field": path });
    if (type === "checkbox") wrap.append(input, ...parts);
    else wrap.append(parts[0], input, ...parts.slice(1));
    return wrap;
  }

  function clearErrors() {
    replace(summary);
    for (const [path, { input }] of controls) {
      input.removeAttribute("aria-invalid");
      replace(slot(path, "error"));
    }
  }

  // Shows `parts` at the field for `path` (or in the summary if no such field); returns the
  // input so the caller can move focus there.
  function showAt(path, ...parts) {
    const known = controls.get(path);
    if (!known) {
      summary.append(h("p", {}, `${path}: `, ...parts));
      return null;
    }
    known.input.setAttribute("aria-invalid", "true");
    slot(path, "error").append(h("p", {}, ...parts));
    return known.input;
  }

  async function discover() {
    const email = controls.get("email").input.value.trim();
    if (inbox || !email.includes("@")) return;
    const found = (await gql(DISCOVER, { email })).discoverMailSettings;
    for (const side of ["smtp", "imap"]) {
      const suggestion = found[side];
      if (!suggestion) continue;
      for (const key of ["host", "port", "security"]) {
        const path = `${side}.${key}`;
        if (dirty.has(path) && !discovered.has(path)) continue; // typed by hand: kept
        // Being typed into right now (the answer came late): the person's text wins.
        if (document.activeElement === controls.get(path).input) continue;
        show(controls.get(path).input, "text", suggestion[key]);
        dirty.add(path);
        discovered.add(path);
        const sure = Math.round(suggestion.confidence * 100);
        replace(slot(path, "source"), `Found in ${SOURCES[suggestion.source] || suggestion.source} (${sure}% sure).`);
      }
    }
    if (found.provider && !dirty.has("provider")) {
      show(controls.get("provider").input, "select", found.provider);
      dirty.add("provider");
    }
    if (found.errors.length) replace(slot("email", "source"), `Discovery incomplete: ${found.errors.join("; ")}`);
  }

  function input() {
    const result = {};
    const given = new Set(dirty);
    // inboxd infers the encryption from a new port when none is given: the encryption the form
    // shows goes with a changed host or port, so what is saved is what was on screen.
    for (const side of ["smtp", "imap"]) {
      if (given.has(`${side}.host`) || given.has(`${side}.port`)) given.add(`${side}.security`);
    }
    for (const path of given) {
      const { input: element, type } = controls.get(path);
      const value = valueOf(element, type);
      if (value !== undefined) put(result, path, value);
    }
    return result;
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    try {
      await submit();
    } catch (error) {
      replace(summary, h("p", {}, `Not saved: ${error.message}`));
    }
  }

  async function submit() {
    const data = inbox
      ? await gql(UPDATE, { id: inbox.id, input: input(), version: inbox.version })
      : await gql(CREATE, { input: input() });
    const payload = data.createEmailInbox || data.updateEmailInbox;
    if (payload.__typename === "VersionConflict" && (await onlyOthersChanged())) return submit();
    if (!payload.inbox) {
      let first = null;
      replace(summary, h("p", {}, payload.message));
      for (const issue of payload.fields || []) first ??= showAt(issue.field, issue.message);
      if (payload.existingId) summary.append(h("a", { href: `#/inboxes/${payload.existingId}` }, "Open the existing inbox"));
      (first || summary).focus?.();
      if (!first) summary.setAttribute("tabindex", "-1"), summary.focus();
      return;
    }
    const created = !inbox;
    inbox = payload.inbox;
    load();
    for (const warning of payload.warnings) showAt(warning.field, `Adjusted: ${warning.message}`);
    heading.textContent = `Edit ${inbox.name}`;
    saveButton.textContent = "Save changes";
    // The form now edits the inbox it created: a fix is saved onto it, not a second inbox.
    if (created) history.replaceState(null, "", `#/inboxes/${encodeURIComponent(inbox.id)}/edit`);
    if (created) connect.remove();
    startWatching();
  }

  // Someone (often the worker, recording a verification) saved the inbox since it was read.
  // When none of the fields changed here were changed there, the edit is saved onto the
  // current version; otherwise the conflict is shown.
  async function onlyOthersChanged() {
    const now = (await gql(READ, { id: inbox.id })).emailInbox;
    const same = (path) => JSON.stringify(read(now, path)) === JSON.stringify(read(inbox, path));
    if (!now || ![...dirty].every(same)) return false;
    inbox = { ...inbox, version: now.version };
    return true;
  }

  function startWatching() {
    stopWatching();
    watch.hidden = false;
    // Verification moves the version on (PENDING, VERIFYING, ...): a fix saved after it is
    // meant for the inbox as it now is, so its expectedVersion follows.
    const seen = (now) => now.id === inbox.id && (inbox.version = Math.max(inbox.version, now.version));
    stopWatching = verification(inbox.id, watch, { showAt, clearErrors, pin, seen });
  }

  async function pin(side, fingerprint) {
    clearErrors();
    const data = await gql(UPDATE, {
      id: inbox.id,
      input: { [side]: { tlsCertificateSha256: fingerprint } },
      version: null,
    });
    const payload = data.updateEmailInbox;
    if (!payload.inbox) return replace(summary, h("p", {}, payload.message));
    inbox = payload.inbox;
    load();
    startWatching();
  }

  function load() {
    dirty.clear();
    for (const [path, { input: element, type }] of controls) {
      if (type === "password") element.value = "";
      else show(element, type, inbox ? read(inbox, path) : DEFAULTS[path]);
    }
    for (const side of ["smtp", "imap"]) {
      const stored = inbox?.[side]?.hasPassword;
      replace(slot(`${side}.password`, "source"), stored ? "A password is stored." : "");
    }
  }

  const heading = h("h1", { tabindex: "-1" }, inbox ? `Edit ${inbox.name}` : "New inbox");
  const saveButton = h("button", { type: "submit" }, inbox ? "Save changes" : "Create inbox");
  const form = h(
    "form",
    { class: "inbox-form", novalidate: true, onsubmit: save },
    GROUPS.map((group) => h("fieldset", {}, h("legend", {}, group.legend), group.fields.map(fieldNode))),
    summary,
    h("div", { class: "actions" }, saveButton),
  );
  controls.get("email").input.addEventListener("change", () => discover().catch((error) => replace(slot("email", "source"), error.message)));
  load();
  // A new inbox can instead be an account that signs in at Google or Microsoft.
  const connect = inbox ? null : connectPanel();
  const node = h("div", { class: "stack" }, heading, connect, watch, form);
  if (inbox && inbox.status !== "ACTIVE") startWatching();
  return { node, dispose: () => stopWatching(), fields: FIELDS };
}
