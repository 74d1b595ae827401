// Drives Debian's Chromium through the console for tests/browser/test_console.py, one step per
// line of JSON on stdin ({"step": "fill", "selector": "#api-key", "value": "..."}), one line of
// JSON per step on stdout ({"ok": true, ...} or {"ok": false, "error": "..."}).
//
// playwright-core only drives the browser (it downloads none); Playwright's locators wait for
// what they act on, so no step sleeps. Pages keep the console's Content-Security-Policy: axe-core
// is evaluated through the DevTools protocol, which the policy does not govern.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const TIMEOUT = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  chromiumSandbox: false,
  args: [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let context = null;
let page = null;
let problems = [];
let frames = []; // what the page's websockets received, for waitFrame
let held = []; // GraphQL answers held back by hold, until release
let onHeld = () => {};
let onFrame = () => {};

const steps = {
  async open({ url, width = 1280, height = 900 }) {
    await context?.close();
    // A new context per open: a fresh profile, so sessionStorage starts empty.
    context = await browser.newContext({ viewport: { width, height } });
    context.setDefaultTimeout(TIMEOUT);
    page = await context.newPage();
    problems = [];
    page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
    page.on("pageerror", (e) => problems.push(String(e)));
    page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
    frames = [];
    page.on("websocket", (ws) =>
      ws.on("framereceived", (f) => {
        frames.push(String(f.payload));
        onFrame();
      }),
    );
    const response = await page.goto(url);
    return { status: response.status(), csp: response.headers()["content-security-policy"] || null };
  },
  async goto({ hash }) {
    await page.evaluate((h) => (location.hash = h), hash);
    await page.locator(`main[data-route="${hash}"]`).waitFor();
    return {};
  },
  async reload() {
    await page.reload();
    return {};
  },
  async fill({ selector, value }) {
    await page.locator(selector).fill(value);
    return {};
  },
  async blur({ selector }) {
    await page.locator(selector).blur();
    return {};
  },
  async select({ selector, value }) {
    await page.locator(selector).selectOption(value);
    return {};
  },
  async click({ selector }) {
    await page.locator(selector).first().click();
    return {};
  },
  async dblclick({ selector }) {
    await page.locator(selector).first().dblclick();
    return {};
  },
  async upload({ selector, name, mimeType, base64 }) {
    await page.locator(selector).setInputFiles({ name, mimeType, buffer: Buffer.from(base64, "base64") });
    return {};
  },
  async frame({ selector }) {
    // A sandboxed frame's attributes and what its document holds and ran (if it ran anything,
    // __ran is set by the message's own script).
    const element = page.locator(selector).first();
    await element.waitFor();
    const attributes = await element.evaluate((f) => ({ sandbox: f.getAttribute("sandbox"), srcdoc: f.getAttribute("srcdoc") }));
    const frame = await (await element.elementHandle()).contentFrame();
    await frame.waitForLoadState();
    const inside = await frame.evaluate(() => ({ text: document.body.innerText, html: document.documentElement.outerHTML, ran: window.__ran || null }));
    return { ...attributes, ...inside };
  },
  async fetch({ url }) {
    // The page's own fetch: same origin, no API key (for links that are their own capability).
    return page.evaluate(async (u) => {
      const r = await fetch(u);
      return { status: r.status, text: await r.text(), disposition: r.headers.get("content-disposition") };
    }, url);
  },
  async attribute({ selector, name }) {
    await page.locator(selector).first().waitFor();
    return { value: await page.locator(selector).first().getAttribute(name) };
  },
  async press({ selector, key }) {
    await page.locator(selector).press(key);
    return {};
  },
  async waitText({ selector, text }) {
    await page.locator(selector, { hasText: text }).first().waitFor();
    return { text: await page.locator(selector, { hasText: text }).first().innerText() };
  },
  async waitValue({ selector, value }) {
    const locator = page.locator(selector);
    try {
      await page.waitForFunction(
        ([s, v]) => document.querySelector(s)?.value === v,
        [selector, value],
        { timeout: TIMEOUT },
      );
    } catch (error) {
      throw new Error(`${selector} is ${JSON.stringify(await locator.inputValue())}, not ${value}`);
    }
    return { value: await locator.inputValue() };
  },
  async texts({ selector }) {
    await page.locator(selector).first().waitFor();
    return { texts: await page.locator(selector).allInnerTexts() };
  },
  async count({ selector }) {
    return { count: await page.locator(selector).count() };
  },
  async state() {
    // What a test asserts about the page as a whole: where focus is, whether it scrolls sideways,
    // the page's HTML, and what the browser complained about (CSP violations are console errors).
    return page.evaluate(() => ({
      focused: document.activeElement?.getAttribute("name") || document.activeElement?.id || null,
      focusedTag: document.activeElement?.tagName,
      hash: location.hash,
      scrollWidth: document.documentElement.scrollWidth,
      width: window.innerWidth,
      html: document.documentElement.outerHTML,
      mark: window.__testMark || null,
      storage: Object.keys(sessionStorage),
      local: Object.keys(localStorage),
    })).then((state) => ({ ...state, problems }));
  },
  async hold({ match }) {
    // The server answers each GraphQL request whose body holds `match`; the page gets the
    // answer only at release (what a slow network does to it).
    await page.route("**/graphql", async (route) => {
      if (!(route.request().postData() || "").includes(match)) return route.fallback();
      held.push({ route, response: await route.fetch() });
      onHeld();
    });
    return {};
  },
  async waitHeld({ count = 1 }) {
    await new Promise((resolve) => {
      onHeld = () => held.length >= count && resolve();
      onHeld();
    });
    return { held: held.length };
  },
  async release() {
    for (const { route, response } of held.splice(0)) await route.fulfill({ response });
    await page.unroute("**/graphql");
    return {};
  },
  async waitFrame({ texts }) {
    // Until a websocket message the page received holds every one of `texts`.
    await new Promise((resolve) => {
      onFrame = () => frames.some((f) => texts.every((t) => f.includes(t))) && resolve();
      onFrame();
    });
    return {};
  },
  async mark({ value }) {
    // Survives only as long as the document: a reload would lose it.
    await page.evaluate((v) => (window.__testMark = v), value);
    return {};
  },
  async timing() {
    return page.evaluate(() => {
      const [nav] = performance.getEntriesByType("navigation");
      const rendered = performance.getEntriesByName("console-rendered")[0];
      return {
        firstRenderMs: rendered ? Math.round(rendered.startTime) : null,
        domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd),
      };
    });
  },
  async axe() {
    await page.evaluate(AXE);
    const result = await page.evaluate(() => axe.run(document, { resultTypes: ["violations"] }));
    return {
      violations: result.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
      })),
    };
  },
  async screenshot({ path, fullPage = true }) {
    await page.screenshot({ path, fullPage, animations: "disabled" });
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  try {
    const result = await steps[command.step](command);
    process.stdout.write(JSON.stringify({ ok: true, ...result }) + "\n");
  } catch (error) {
    // What the page said, to tell a slow server from a wrong page.
    const shown = await page?.locator("main").innerText({ timeout: 1000 }).catch(() => "");
    const message = `${error.message || error}\n--- the page showed:\n${(shown || "").slice(0, 1500)}`;
    process.stdout.write(JSON.stringify({ ok: false, error: message, problems }) + "\n");
  }
}
await browser.close();
