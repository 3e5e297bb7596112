// The part of the WebSocket API the client uses: both the browser's WebSocket and the `ws` package's
// (Node) satisfy it, so the client takes either as an injected constructor and imports neither.

/** Only the events and fields the client reads; listeners are registered once per socket. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  /** An error is always followed by a close event, which is what the client acts on. */
  addEventListener(type: "error", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The injected constructor, else the runtime's global one; Node 20 has none, so callers pass `ws`'s. */
export function resolveWebSocketConstructor(injected: WebSocketConstructor | undefined, scope: object = globalThis): WebSocketConstructor {
  if (injected !== undefined) return injected;
  const global = (scope as { readonly WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === "function") return global;
  throw new TypeError(
    "CellwireClient: this runtime has no global WebSocket (Node 20 has none); pass one in the options, " +
      'e.g. `import { WebSocket } from "ws"; new CellwireClient({ ..., WebSocket })`',
  );
}
