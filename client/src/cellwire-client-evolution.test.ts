// What a newer edge may send this SDK (client/BEHAVIOUR.md, "Newer edges"; docs/decisions/0010): frames of
// unknown types and fields are ignored, unknown error codes are handled by their `retryable`, and
// `retryAfterMs` is honoured whatever the code. Against the in-memory edge and a manual clock.
import { afterEach, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientOptions } from "./cellwire-client.ts";
import { CellwireClientError } from "./errors.ts";
import { FakeEdge, directConversationId, flush, groupConversationId, type FakeSocket } from "../test/fake-edge.ts";
import { ManualClock } from "../test/manual-clock.ts";

const edges: FakeEdge[] = [];

afterEach(() => {
  for (const edge of edges.splice(0)) expect(edge.invalidTexts).toEqual([]);
});

function setup(overrides: Partial<CellwireClientOptions> = {}) {
  const edge = new FakeEdge("alice");
  edges.push(edge);
  const clock = new ManualClock();
  const errors: CellwireClientError[] = [];
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async () => "token",
    deviceId: "laptop",
    WebSocket: edge.WebSocket,
    clock,
    random: () => 0,
    heartbeat: false,
    // Every retry delay at its bound without a hint: 50, 100, 200.
    retryBackoff: { initialDelayMs: 50, delayMsMax: 200, multiplier: 2, jitterRatio: 0.5 },
    ...overrides,
  });
  client.on("error", (error) => errors.push(error));
  return { edge, clock, client, errors };
}

async function rejection(promise: Promise<unknown>): Promise<CellwireClientError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof CellwireClientError)) throw new Error(`expected a CellwireClientError rejection, got ${String(outcome)}`);
  return outcome;
}

/** An error frame as a newer edge may write it: any code, raw, so the test is not bound by today's codes. */
function answerError(socket: FakeSocket, requestId: string, fields: { code: string; retryable: boolean; retryAfterMs?: number }): void {
  socket.deliver(JSON.stringify({ type: "error", requestId, message: `answered ${fields.code}`, ...fields }));
}

/** Answers the first `failures` sends with an error frame made by `fields`, then stores them as usual. */
function failSends(edge: FakeEdge, failures: number, fields: { code: string; retryable: boolean; retryAfterMs?: number }): void {
  let left = failures;
  edge.onRequest = (frame, socket) => {
    if (frame.type !== "send" || left === 0) return "default";
    left -= 1;
    answerError(socket, frame.requestId, fields);
    return "ignore";
  };
}

describe("CellwireClient: frames and fields this SDK does not know", () => {
  it("ignores a frame of an unknown type: no error, no event, the session goes on", async () => {
    const { edge, client, errors } = setup();
    const seen: string[] = [];
    client.on("event", () => seen.push("event"));
    client.on("message", () => seen.push("message"));
    await client.connect();
    edge.lastSocket.deliver(JSON.stringify({ type: "conversationUpdated", conversationId: directConversationId, title: "renamed" }));
    edge.lastSocket.deliver(JSON.stringify({ type: "surprise" }));
    expect(errors).toEqual([]);
    expect(seen).toEqual([]);
    expect(client.state).toBe("open");
    await expect(client.send(directConversationId, "still fine")).resolves.toMatchObject({ seq: 1 });
  });

  it("an unknown frame still counts as a sign of life for the heartbeat", async () => {
    const { edge, clock, client } = setup({ heartbeat: true });
    edge.heartbeatIntervalMs = 1000;
    edge.onRequest = (frame) => (frame.type === "ping" ? "ignore" : "default");
    await client.connect();
    clock.advanceBy(1000);
    edge.lastSocket.deliver(JSON.stringify({ type: "surprise" }));
    clock.advanceBy(1000);
    expect(client.state).toBe("open");
    clock.advanceBy(1000);
    expect(client.state).toBe("waiting_to_reconnect");
  });

  it("drops fields it does not know from known frames", async () => {
    const { edge, client } = setup();
    const messages: unknown[] = [];
    client.on("message", (message) => messages.push(message));
    await client.connect();
    const message = edge.store(directConversationId, "cm-1", "hi", "bob");
    // The same message again, as a newer edge would write it, for the next seq.
    edge.lastSocket.deliver(
      JSON.stringify({ type: "message", reactions: [], message: { ...message, seq: 2, messageId: "m2", edited: false } }),
    );
    expect(messages).toEqual([message, { ...message, seq: 2, messageId: "m2" }]);
  });
});

describe("CellwireClient: error codes this SDK does not know", () => {
  it("retries an idempotent request answered with an unknown retryable code, as internal, within requestRetriesMax", async () => {
    const { edge, clock, client } = setup();
    failSends(edge, 2, { code: "shard_rebalancing", retryable: true });
    await client.connect();
    const sent = client.send(directConversationId, "persist", { clientMessageId: "cm-retry" });
    await flush();
    clock.advanceBy(50);
    await flush();
    clock.advanceBy(100);
    await expect(sent).resolves.toMatchObject({ seq: 1, clientMessageId: "cm-retry" });
    expect(edge.framesOfType("send")).toHaveLength(3);
  });

  it("rejects at once on an unknown code that is not retryable, keeping its message", async () => {
    const { edge, client } = setup();
    failSends(edge, 1, { code: "account_suspended", retryable: false });
    await client.connect();
    expect(await rejection(client.send(directConversationId, "no"))).toMatchObject({
      code: "internal",
      retryable: false,
      message: "answered account_suspended",
    });
    expect(edge.framesOfType("send")).toHaveLength(1);
  });
});

describe("CellwireClient: overloaded and retryAfterMs", () => {
  it("waits retryAfterMs before the retry of an overloaded send, not the shorter backoff", async () => {
    const { edge, clock, client } = setup();
    failSends(edge, 1, { code: "overloaded", retryable: true, retryAfterMs: 3000 });
    await client.connect();
    const sent = client.send(directConversationId, "later");
    await flush();
    clock.advanceBy(2999);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    clock.advanceBy(1);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(2);
    await expect(sent).resolves.toMatchObject({ seq: 1 });
  });

  it("spreads the retry above retryAfterMs with the jitter, never below", async () => {
    // random 0.5: 3000 + ⌊3000 × 0.5 × 0.5⌋ = 3750.
    const { edge, clock, client } = setup({ random: () => 0.5 });
    failSends(edge, 1, { code: "overloaded", retryable: true, retryAfterMs: 3000 });
    await client.connect();
    const sent = client.send(directConversationId, "later");
    await flush();
    clock.advanceBy(3749);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    clock.advanceBy(1);
    await expect(sent).resolves.toMatchObject({ seq: 1 });
  });

  it("honours retryAfterMs whatever the code, an unknown one included", async () => {
    const { edge, clock, client } = setup();
    failSends(edge, 1, { code: "cell_cooling_down", retryable: true, retryAfterMs: 800 });
    await client.connect();
    const sent = client.send(directConversationId, "later");
    await flush();
    clock.advanceBy(799);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    clock.advanceBy(1);
    await expect(sent).resolves.toMatchObject({ seq: 1 });
  });

  it("retries overloaded at most requestRetriesMax times, then rejects with it and its retryAfterMs", async () => {
    const { edge, clock, client } = setup({ requestRetriesMax: 2 });
    failSends(edge, 10, { code: "overloaded", retryable: true, retryAfterMs: 100 });
    await client.connect();
    const sent = rejection(client.send(directConversationId, "doomed"));
    for (let round = 0; round < 4; round++) {
      await flush();
      clock.advanceBy(1000);
    }
    expect(await sent).toMatchObject({ code: "overloaded", retryable: true, retryAfterMs: 100 });
    expect(edge.framesOfType("send")).toHaveLength(3);
  });

  it("rejects at once with the edge's error when the retry would come after the request's deadline", async () => {
    const { edge, clock, client } = setup({ requestTimeoutMs: 5000 });
    failSends(edge, 1, { code: "overloaded", retryable: true, retryAfterMs: 6000 });
    await client.connect();
    const sent = rejection(client.send(directConversationId, "too late"));
    await flush();
    expect(await sent).toMatchObject({ code: "overloaded", retryable: true, retryAfterMs: 6000 });
    expect(client.pendingRequestCount).toBe(0);
    clock.advanceBy(10_000);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
  });

  it("a request that is not idempotent is not retried: it rejects with overloaded and the retryAfterMs to honour", async () => {
    const { edge, client } = setup();
    edge.onRequest = (frame, socket) => {
      if (frame.type !== "addMembers") return "default";
      answerError(socket, frame.requestId, { code: "overloaded", retryable: true, retryAfterMs: 2500 });
      return "ignore";
    };
    await client.connect();
    expect(await rejection(client.addMembers(groupConversationId, ["dave"]))).toMatchObject({
      code: "overloaded",
      retryable: true,
      retryAfterMs: 2500,
    });
    expect(edge.framesOfType("addMembers")).toHaveLength(1);
  });

  it("an error without a requestId is an error event, with its retryAfterMs", async () => {
    const { edge, client, errors } = setup();
    await client.connect();
    edge.lastSocket.deliver({ type: "error", code: "overloaded", message: "shedding load", retryable: true, retryAfterMs: 1000 });
    expect(errors).toEqual([expect.objectContaining({ code: "overloaded", retryAfterMs: 1000 })]);
    expect(client.state).toBe("open");
  });
});

describe("CellwireClient: rate_limited with retryAfterMs (docs/protocol.md, Rate limits)", () => {
  it("retries a send and a history request refused rate_limited no sooner than retryAfterMs, and they succeed", async () => {
    const { edge, clock, client } = setup();
    let refusals = 0;
    edge.onRequest = (frame, socket) => {
      if ((frame.type !== "send" && frame.type !== "history") || refusals >= 2) return "default";
      refusals += 1;
      answerError(socket, frame.requestId, { code: "rate_limited", retryable: true, retryAfterMs: 1500 });
      return "ignore";
    };
    await client.connect();
    const sent = client.send(directConversationId, "paced", { clientMessageId: "cm-paced" });
    const page = client.history(directConversationId);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    expect(edge.framesOfType("history")).toHaveLength(1);
    // The backoff alone would retry after 50 ms; the edge asked for 1,500.
    clock.advanceBy(1499);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    expect(edge.framesOfType("history")).toHaveLength(1);
    clock.advanceBy(1);
    await expect(sent).resolves.toMatchObject({ seq: 1, clientMessageId: "cm-paced" });
    await expect(page).resolves.toMatchObject({ messages: [expect.objectContaining({ clientMessageId: "cm-paced" })] });
    expect(edge.framesOfType("send")).toHaveLength(2);
  });

  it("does not retry an addMembers refused rate_limited: it rejects with the retryAfterMs for the caller", async () => {
    const { edge, client } = setup();
    edge.onRequest = (frame, socket) => {
      if (frame.type !== "addMembers") return "default";
      answerError(socket, frame.requestId, { code: "rate_limited", retryable: true, retryAfterMs: 200 });
      return "ignore";
    };
    await client.connect();
    expect(await rejection(client.addMembers(groupConversationId, ["dave"]))).toMatchObject({
      code: "rate_limited",
      retryable: true,
      retryAfterMs: 200,
    });
    expect(edge.framesOfType("addMembers")).toHaveLength(1);
  });
});
