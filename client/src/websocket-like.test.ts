import { WebSocket as NodeWebSocket } from "ws";
import { describe, expect, expectTypeOf, it } from "vitest";
import { resolveWebSocketConstructor, type WebSocketConstructor } from "./websocket-like.ts";

describe("resolveWebSocketConstructor", () => {
  it("accepts the browser's WebSocket type and the ws package's (Node) as constructors", () => {
    expectTypeOf(NodeWebSocket).toExtend<WebSocketConstructor>();
    expectTypeOf<typeof globalThis.WebSocket>().toExtend<WebSocketConstructor>();
    expect(resolveWebSocketConstructor(NodeWebSocket)).toBe(NodeWebSocket);
  });

  it("falls back to the global WebSocket", () => {
    const scope = { WebSocket: NodeWebSocket };
    expect(resolveWebSocketConstructor(undefined, scope)).toBe(NodeWebSocket);
  });

  it("throws a clear error where there is none (Node 20)", () => {
    expect(() => resolveWebSocketConstructor(undefined, {})).toThrow(/no global WebSocket.*pass one in the options/s);
  });
});
