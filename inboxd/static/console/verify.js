// An inbox's verification, live: its status from emailInboxStatus and each side's result from
// the connectionTest subscription of its newest test. Failures go to the field at fault.
import { subscribe } from "./api.js";
import { badge, h, replace } from "./dom.js";

export const PROBE = `ok code message hint field latencyMs
  tls { version sha256Fingerprint trusted pinned }`;
const STATUS = `subscription Status($id: ID!) { emailInboxStatus(id: $id) {
  id status statusReason version connectionTests(first: 1) { edges { node { id } } } } }`;
const TEST = `subscription Test($id: ID!) { connectionTest(id: $id) {
  id state error smtp { ${PROBE} } imap { ${PROBE} } } }`;
const SIDES = { smtp: "SMTP", imap: "IMAP" };

export function sideResult(side, result) {
  if (!result) return h("li", { "data-side": side }, `${SIDES[side]}: waiting`);
  const text = result.ok ? `ok in ${result.latencyMs} ms` : `${result.code}: ${result.message}`;
  return h("li", { "data-side": side }, `${SIDES[side]}: `, badge(result.ok ? "OK" : result.code), " ", text);
}

// `form` is { showAt(path, ...parts), clearErrors(), pin(side, fingerprint), seen(inbox) } or
// null (the inbox page shows results without a form). Returns the function that stops watching.
export function verification(id, panel, form) {
  const status = h("p", { class: "verify-status" });
  const sides = h("ul", { class: "sides" });
  replace(panel, h("h2", { id: "verify-heading" }, "Verification"), h("div", { "aria-live": "polite" }, status, sides));
  let testId = null;
  let stopTest = () => {};

  function onTest({ connectionTest: test }) {
    replace(sides, sideResult("smtp", test.smtp), sideResult("imap", test.imap));
    if (!["PASSED", "FAILED"].includes(test.state) || !form) return;
    form.clearErrors();
    let first = null;
    for (const side of ["smtp", "imap"]) {
      const result = test[side];
      if (!result || result.ok) continue;
      const parts = [`${SIDES[side]}: ${result.message}`];
      if (result.hint) parts.push(h("br"), h("strong", {}, "Fix: "), result.hint);
      const fingerprint = result.tls?.sha256Fingerprint;
      if (result.code === "CERTIFICATE_UNTRUSTED" && fingerprint) {
        parts.push(
          h("br"),
          "Certificate SHA-256: ",
          h("code", { class: "fingerprint" }, fingerprint),
          h("br"),
          h("button", { type: "button", class: "trust", onclick: () => form.pin(side, fingerprint) }, "Trust this certificate"),
        );
      }
      first ??= form.showAt(result.field || `${side}.host`, ...parts);
    }
    first?.focus();
  }

  const stopStatus = subscribe(STATUS, { id }, ({ emailInboxStatus: inbox }) => {
    replace(status, "Status: ", badge(inbox.status), inbox.statusReason ? ` ${inbox.statusReason}` : "");
    form?.seen(inbox);
    const newest = inbox.connectionTests.edges[0]?.node.id;
    if (newest && newest !== testId) {
      testId = newest;
      stopTest();
      stopTest = subscribe(TEST, { id: newest }, onTest);
    }
  });
  return () => {
    stopStatus();
    stopTest();
  };
}
