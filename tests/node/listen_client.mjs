// Drives shardgate with the official TypeScript SDK v2 client (`@modelcontextprotocol/client`):
// connects pinned to the stateless era, opens a `subscriptions/listen` stream, triggers a tool
// list change and waits for it on that stream, then closes.
//
// Usage: node listen_client.mjs SDK_ENTRY URL [TRIGGER_TOOL]
//
// SDK_ENTRY is the package's ESM entry point (this script lives outside the package's
// node_modules, so it is imported by path). TRIGGER_TOOL is the builtin upstream's
// `test_trigger_tool_change` under the name the endpoint shows it (prefixed when federated). Prints `ok listen <version> <honoured filter>`;
// exits non-zero with the SDK's error otherwise (a listen whose acknowledgement never matches
// its request id fails with "ack timed out").

import { pathToFileURL } from "node:url";

const [entry, url, trigger = "test_trigger_tool_change"] = process.argv.slice(2);
const { Client, StreamableHTTPClientTransport } = await import(pathToFileURL(entry).href);

const client = new Client(
  { name: "shardgate-tests", version: "1.0.0" },
  { versionNegotiation: { mode: { pin: "2026-07-28" } } },
);
let announced;
const changed = new Promise((resolve) => {
  announced = resolve;
});
client.setNotificationHandler("notifications/tools/list_changed", () => announced());

// The gateway issues a stateless client a correlation key (`Shardgate-Client-Key`) so that its
// calls of an upstream that keeps per-client state share that state; a client that never sends
// it back is a new client on every call. This client keeps it, as SEP-2567 asks of clients of a
// gateway that bridges to stateful servers: without it, the trigger below would run in another
// upstream session than the listen stream, which would then never hear of it.
let clientKey;
const keyKeeping = async (input, init = {}) => {
  const headers = new Headers(init.headers);
  if (clientKey) headers.set("shardgate-client-key", clientKey);
  const response = await fetch(input, { ...init, headers });
  clientKey = response.headers.get("shardgate-client-key") ?? clientKey;
  return response;
};
await client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: keyKeeping }), {
  timeout: 10_000,
});
const subscription = await client.listen({ toolsListChanged: true }, { timeout: 10_000 });
if (subscription.honoredFilter.toolsListChanged !== true) {
  throw new Error(`toolsListChanged not honoured: ${JSON.stringify(subscription.honoredFilter)}`);
}
await client.callTool({ name: trigger, arguments: {} });
const late = setTimeout(() => {
  console.error("no tools/list_changed on the listen stream within 10 s");
  process.exit(1);
}, 10_000);
await changed;
clearTimeout(late);
await subscription.close();
console.log(
  `ok listen ${client.getNegotiatedProtocolVersion()} ${JSON.stringify(subscription.honoredFilter)}`,
);
await client.close();
