// Only the client: the browser never runs graphql-ws's server (and so never loads graphql).
export { createClient, CloseCode } from "graphql-ws/client";
