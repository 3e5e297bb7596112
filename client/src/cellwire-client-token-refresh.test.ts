// The SDK keeps a session's token fresh on the open socket (client/BEHAVIOUR.md, "Token lifetime"): it
// asks its provider before the edge's deadline (welcome.tokenExpiresAtMs) and sends `refresh`, only to an
// edge whose welcome names that deadline. Against the in-memory edge and a manual clock.
import { afterEach, describe, expect, it } from "vitest";
import type { RefreshFrame } from "@cellwire/protocol";
import { CellwireClient } from "./cellwire-client.ts";
import { CellwireClientError } from "./errors.ts";
import type { TokenRequest } from "./cellwire-client.ts";
import { FakeEdge, flush } from "../test/fake-edge.ts";
import { ManualClock } from "../test/manual-clock.ts";

const tokenLifetimeMs = 10_000;
const edges: FakeEdge[] = [];

afterEach(() => {
  for (const edge of edges.splice(0)) expect(edge.invalidTexts).toEqual([]);
});

/** Tokens are `exp:<ms>`: the fake edge reads the deadline from them. */
function setup(refreshSupported: boolean) {
  const edge = new FakeEdge("alice");
  edges.push(edge);
  edge.refreshSupported = refreshSupported;
  edge.expiresAtMsOfToken = (token) => Number(token.slice("exp:".length));
  const clock = new ManualClock();
  const tokenRequests: TokenRequest[] = [];
  const errors: CellwireClientError[] = [];
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async (request) => {
      tokenRequests.push(request);
      return `exp:${clock.nowMs() + tokenLifetimeMs}`;
    },
    WebSocket: edge.WebSocket,
    clock,
    // No jitter: the refresh is due at 80% of the time left.
    random: () => 0,
    heartbeat: false,
  });
  client.on("error", (error) => errors.push(error));
  return { edge, clock, client, tokenRequests, errors };
}

function refreshes(edge: FakeEdge): RefreshFrame[] {
  return edge.received.flatMap(({ frame }) => (frame.type === "refresh" ? [frame] : []));
}

describe("CellwireClient: token refresh on the open socket", () => {
  it("asks the provider at 80% of the token's time left, sends refresh, and schedules the next from the refreshed deadline", async () => {
    const { edge, clock, client, tokenRequests, errors } = setup(true);
    const startMs = clock.nowMs();
    const welcome = await client.connect();
    expect(welcome.tokenExpiresAtMs).toBe(startMs + tokenLifetimeMs);
    clock.advanceBy(7999);
    await flush();
    expect(refreshes(edge)).toEqual([]);
    clock.advanceBy(1);
    await flush();
    expect(tokenRequests.map((request) => request.reason)).toEqual(["connect", "refresh"]);
    expect(refreshes(edge)).toEqual([
      { type: "refresh", requestId: expect.any(String) as unknown, token: `exp:${startMs + 8000 + tokenLifetimeMs}` },
    ]);
    // The next refresh is due at 80% of the new token's time left: 8000 ms after the first.
    clock.advanceBy(7999);
    await flush();
    expect(refreshes(edge)).toHaveLength(1);
    clock.advanceBy(1);
    await flush();
    expect(refreshes(edge)).toHaveLength(2);
    expect(edge.sockets).toHaveLength(1);
    expect(client.state).toBe("open");
    expect(errors).toEqual([]);
    client.close();
  });

  it("sends no refresh to an edge whose welcome names no deadline (an older edge)", async () => {
    const { edge, clock, client, tokenRequests } = setup(false);
    const welcome = await client.connect();
    expect(welcome.tokenExpiresAtMs).toBeUndefined();
    clock.advanceBy(10 * tokenLifetimeMs);
    await flush();
    expect(refreshes(edge)).toEqual([]);
    expect(tokenRequests).toHaveLength(1);
    client.close();
  });

  it("reports a refused refresh as an error and keeps the session until the edge closes it", async () => {
    const { edge, clock, client, errors } = setup(true);
    edge.onRequest = (frame, socket) => {
      if (frame.type !== "refresh") return "default";
      socket.deliver(
        JSON.stringify({
          type: "error",
          requestId: frame.requestId,
          code: "token_user_mismatch",
          message: "another user",
          retryable: false,
        }),
      );
      return "ignore";
    };
    await client.connect();
    clock.advanceBy(8000);
    await flush();
    expect(errors.map((error) => error.code)).toEqual(["token_user_mismatch"]);
    expect(client.state).toBe("open");
    client.close();
  });
});
