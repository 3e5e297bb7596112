// Whether a NATS connection is connected now, for readiness checks and a 0/1 gauge. nats.js tells this
// only as status events, so a watcher follows them: a disconnect clears it, a reconnect sets it, and a
// closed connection stays cleared.
import type { NatsConnection } from "@nats-io/transport-node";

export type NatsConnectedState = { readonly connected: () => boolean };

/** Call right after connecting (the connection is connected then); follows it until it closes. */
export function watchNatsConnected(connection: Pick<NatsConnection, "status" | "isClosed">): NatsConnectedState {
  let connected = !connection.isClosed();
  void (async () => {
    for await (const status of connection.status()) {
      if (status.type === "disconnect") connected = false;
      else if (status.type === "reconnect") connected = true;
    }
  })().catch(() => undefined);
  return { connected: () => connected && !connection.isClosed() };
}
