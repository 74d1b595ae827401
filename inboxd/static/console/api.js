// The API: queries and mutations over HTTP, subscriptions over one graphql-ws socket (the
// protocol's reference client, vendored), both with the API key kept in this tab only.
import { createClient } from "./vendor/graphql-ws.js";

const KEY = "inboxd.console.apiKey";
let socket = null;

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  signIn(key) {
    sessionStorage.setItem(KEY, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
    socket?.dispose();
    socket = null;
  },
};

export class ApiError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    this.errors = errors;
    this.code = errors[0]?.extensions?.code;
  }
}

export async function gql(query, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${session.key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) throw new ApiError(body.errors);
  return body.data;
}

function live() {
  if (socket === null) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = createClient({
      url: `${scheme}//${location.host}/graphql`,
      connectionParams: () => ({ authorization: `Bearer ${session.key}` }),
      lazy: true,
      retryAttempts: 5,
    });
  }
  return socket;
}

// Calls onData with each result's data until the returned function is called.
export function subscribe(query, variables, onData, onError = (error) => console.error(error)) {
  return live().subscribe(
    { query, variables },
    {
      next: (result) => (result.errors ? onError(new ApiError(result.errors)) : onData(result.data)),
      error: (error) => onError(Array.isArray(error) ? new ApiError(error) : error),
      complete: () => {},
    },
  );
}
