// graphql-ws's own client (the protocol's reference implementation) against inboxd.
//
//   node reference_client.mjs '{"url": "ws://...", "key": "inbx_...", "scenario": "watch", ...}'
//
// Prints one JSON object per line: what the client saw, for the Python test to judge.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const config = JSON.parse(process.argv[2]);
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");

function client(connectionParams, extra = {}) {
  const made = createClient({
    url: config.url,
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: true,
    ...extra,
  });
  made.on("closed", (event) => print({ event: "closed", code: event.code, reason: event.reason }));
  return made;
}

async function watch() {
  // The document as GraphiQL sends it: every operation of the editor, one chosen by name.
  const ws = client(() => ({ authorization: `Bearer ${config.key}` }), { keepAlive: 50 });
  ws.on("pong", (received) => received && print({ event: "pong" }));
  const subscription = ws.iterate({
    query: config.document,
    operationName: "Watch",
    variables: { id: config.inboxId },
  });
  let seen = 0;
  for await (const result of subscription) {
    print({ event: "next", result });
    if (++seen >= config.count) break; // return(): the client sends `complete`
  }
  const query = ws.iterate({ query: config.document, operationName: "Other" });
  for await (const result of query) print({ event: "query", result });
  // A second subscription on the same socket after the first one completed.
  const again = ws.iterate({
    query: config.document,
    operationName: "Watch",
    variables: { id: config.inboxId },
  });
  for await (const result of again) {
    print({ event: "again", result });
    break;
  }
  await ws.dispose();
  print({ event: "done" });
}

async function nullInit() {
  const ws = client(() => null);
  try {
    for await (const result of ws.iterate({ query: "{ viewer { inboxUsage } }" })) {
      print({ event: "unexpected", result });
    }
  } catch (error) {
    print({ event: "refused", code: error.code, reason: error.reason });
  }
  await ws.dispose();
  print({ event: "done" });
}

async function invalid() {
  // Not lazy: one socket for the whole run, so a close in between would show.
  const ws = client(() => ({ authorization: `Bearer ${config.key}` }), { lazy: false });
  try {
    for await (const result of ws.iterate({ query: "subscription { nope }" })) {
      print({ event: "unexpected", result });
    }
  } catch (errors) {
    print({ event: "error", errors });
  }
  // The socket survives an operation's error: the next one is served on it.
  for await (const result of ws.iterate({ query: "{ viewer { inboxUsage } }" })) {
    print({ event: "query", result });
  }
  await ws.dispose();
  print({ event: "done" });
}

const scenarios = { watch, nullInit, invalid };
await scenarios[config.scenario]();
