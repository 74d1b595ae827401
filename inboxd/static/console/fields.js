// The inbox form's fields, named by their GraphQL input path: a ValidationError's
// `fields[].field` and a probe's `field` (e.g. "smtp.password") find their input by name.
const SECURITY = [["", "Inferred from the port"], ["TLS", "TLS (465, 993)"], ["STARTTLS", "STARTTLS (587, 143)"], ["NONE", "None (trusted network only)"]];
const PROVIDERS = ["", "CUSTOM", "GMAIL", "OFFICE365", "OUTLOOK", "YAHOO", "ICLOUD", "ZOHO", "FASTMAIL", "AOL"];
const POLICIES = ["", "DONT_DELETE", "DELETE_ON_RECEIVE", "DELETE_WHEN_DELETED"];

function server(side, label) {
  return {
    legend: `${label} (${side === "smtp" ? "sending" : "receiving"})`,
    fields: [
      [`${side}.host`, `${label} server`, "text"],
      [`${side}.port`, `${label} port`, "number"],
      [`${side}.security`, `${label} encryption`, "select", SECURITY],
      [`${side}.username`, `${label} username`, "text", null, "Defaults to the email address."],
      [`${side}.password`, `${label} password`, "password", null, "Write-only: left blank, the stored one is kept."],
      [`${side}.tlsCertificateSha256`, `${label} pinned certificate (SHA-256)`, "text", null, "Only for a server whose certificate no public authority signed."],
    ],
  };
}

export const GROUPS = [
  {
    legend: "Mailbox",
    fields: [
      ["email", "Email", "email", null, "The settings below are discovered from it."],
      ["password", "Password", "password", null, "The password for both sides, when they share one."],
      ["name", "Name", "text", null, "A label; defaults to the email."],
      ["displayName", "Sender name", "text"],
      ["provider", "Provider", "select", PROVIDERS.map((p) => [p, p || "Discovered or custom"])],
      ["department", "Department", "text"],
      ["description", "Description", "text"],
      ["senderInfo", "Sender info", "text"],
      ["active", "Switched on", "checkbox"],
    ],
  },
  server("smtp", "SMTP"),
  server("imap", "IMAP"),
  {
    legend: "OAuth access token (instead of passwords)",
    fields: [
      ["oauth2.accessToken", "Access token", "password", null, "Write-only. For a token refreshed elsewhere; for one inboxd refreshes, use Connect with OAuth on the new-inbox page."],
      ["oauth2.expiresAt", "Access token expires", "datetime-local", null, "In this browser's time zone."],
    ],
  },
  {
    legend: "Sending",
    fields: [
      ["sendingEnabled", "Sending enabled", "checkbox"],
      ["dailySendLimit", "Daily send limit", "number", null, "1 to 50."],
      ["replyTo", "Reply-to", "email"],
      ["signature", "Signature (HTML)", "textarea"],
      ["dkimSelectors", "DKIM selectors", "list", null, "Comma-separated."],
      ["timeZone", "Time zone of the daily limit", "text", null, "IANA name, e.g. Europe/Berlin; empty: UTC."],
      [
        "sending.copyToSentFolder",
        "Copy sent mail to the Sent folder",
        "yesno",
        [["", "As the provider does"], ["true", "Always"], ["false", "Never"]],
      ],
    ],
  },
  {
    legend: "Receiving",
    fields: [
      ["receiving.enabled", "Receiving enabled", "checkbox"],
      ["receiving.folders", "Folders", "list", null, "Comma-separated; INBOX by default."],
      ["receiving.backfillDays", "Import days of existing mail", "number", null, "0 to 90."],
      ["deleteMessagePolicy", "Delete messages", "select", POLICIES.map((p) => [p, p || "Default"])],
      ["notifyOnNewMessages", "Notify on new messages", "checkbox"],
      ["notificationEmail", "Notification email", "email"],
      ["tags", "Tags", "list", null, "Comma-separated."],
    ],
  },
];

export const FIELDS = GROUPS.flatMap((group) => group.fields);

// An input's value as the API takes it; undefined: not given.
export function valueOf(control, type) {
  if (type === "checkbox") return control.checked;
  const raw = control.value.trim();
  if (type === "yesno") return raw === "" ? null : raw === "true";
  if (raw === "") return undefined;
  if (type === "number") return Number(raw);
  if (type === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (type === "datetime-local") return new Date(raw).toISOString();
  return raw;
}

export function show(control, type, value) {
  if (type === "checkbox") control.checked = Boolean(value);
  else if (type === "yesno") control.value = value == null ? "" : String(value);
  else if (type === "list") control.value = (value || []).join(", ");
  else control.value = value ?? "";
}

// Sets `value` at a dotted path ("smtp.port") of `target`.
export function put(target, path, value) {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) node = node[part] ??= {};
  node[parts.at(-1)] = value;
}

export function read(source, path) {
  return path.split(".").reduce((node, part) => node?.[part], source);
}

export function domId(path) {
  return `f-${path.replace(".", "-")}`;
}
