// The directory's published moves (directory.changed), as every process that caches homes follows them:
// the worker's home cells, the edge's directory cache and sessions. Core NATS, at most once: a change
// missed costs only that the next request meets cell.moved and follows it.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { directoryChange, directoryChangesSubject, type DirectoryEntry } from "@cellwire/protocol";
import { decodeMessage } from "./nats-json.ts";

/** Calls `changed` with each entry the directory publishes as moved; a message that does not decode is reported to `warn`. */
export function subscribeDirectoryChanges(
  connection: NatsConnection,
  namespace: string,
  changed: (entry: DirectoryEntry) => void,
  warn: (message: string) => void,
): Subscription {
  return connection.subscribe(directoryChangesSubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(directoryChange, message.data);
      if (decoded.ok) changed(decoded.value.entry);
      else warn(`a directory.changed message does not decode: ${decoded.reason}`);
    },
  });
}
