// Typing and presence in the SDK (client/BEHAVIOUR.md, "Typing" and "Presence") against the in-memory
// edge and a manual clock: no network, no sleeping.
import { closeCodes, type ServerFrame } from "@cellwire/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientOptions } from "./cellwire-client.ts";
import { CellwireClientError } from "./errors.ts";
import type { PresenceState } from "@cellwire/protocol";
import { FakeEdge, flush, groupConversationId } from "../test/fake-edge.ts";
import { ManualClock } from "../test/manual-clock.ts";
import type { TypingIndicator, TypingStopped } from "./typing-indicators.ts";

const edges: FakeEdge[] = [];

afterEach(() => {
  for (const edge of edges.splice(0)) expect(edge.invalidTexts).toEqual([]);
});

function setup(overrides: Partial<CellwireClientOptions> = {}) {
  const edge = new FakeEdge("alice");
  edges.push(edge);
  const clock = new ManualClock();
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async () => "token",
    deviceId: "laptop",
    WebSocket: edge.WebSocket,
    clock,
    random: () => 0,
    heartbeat: false,
    backoff: { initialDelayMs: 100, delayMsMax: 1000, multiplier: 2, jitterRatio: 0.5 },
    retryBackoff: { initialDelayMs: 50, delayMsMax: 200, multiplier: 2, jitterRatio: 0.5 },
    ...overrides,
  });
  const typing: TypingIndicator[] = [];
  const stopped: TypingStopped[] = [];
  const presence: PresenceState[] = [];
  const errors: CellwireClientError[] = [];
  client.on("typing", (indicator) => typing.push(indicator));
  client.on("typingStopped", (entry) => stopped.push(entry));
  client.on("presence", (state) => presence.push(state));
  client.on("error", (error) => errors.push(error));
  return { edge, clock, client, typing, stopped, presence, errors };
}

async function rejection(promise: Promise<unknown>): Promise<CellwireClientError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof CellwireClientError)) throw new Error(`expected a CellwireClientError rejection, got ${String(outcome)}`);
  return outcome;
}

const indicatorFrame = (userId: string, deviceId: string, expiresInMs = 5000): ServerFrame => ({
  type: "typing",
  conversationId: groupConversationId,
  userId,
  deviceId,
  expiresInMs,
});

describe("CellwireClient: typing()", () => {
  it("sends typing and resolves on typingAck; calls within typingThrottleMs send nothing", async () => {
    const { edge, clock, client } = setup({ typingThrottleMs: 2000 });
    await client.connect();
    await client.typing(groupConversationId);
    await client.typing(groupConversationId);
    clock.advanceBy(1999);
    await client.typing(groupConversationId);
    expect(edge.framesOfType("typing")).toHaveLength(1);
    clock.advanceBy(1);
    await client.typing(groupConversationId);
    await client.typing("d-CCCCCCCCCCCCCCCCCCCCCC");
    expect(edge.framesOfType("typing").map((frame) => frame.conversationId)).toEqual([
      groupConversationId,
      groupConversationId,
      "d-CCCCCCCCCCCCCCCCCCCCCC",
    ]);
  });

  it("rejects with the edge's error without retrying, and does not throttle the next call after a refusal", async () => {
    const { edge, client } = setup();
    await client.connect();
    let answer: ServerFrame["type"] = "error";
    edge.onRequest = (frame) =>
      frame.type === "typing" && answer === "error"
        ? { type: "error", requestId: frame.requestId, code: "rate_limited", message: "too soon", retryable: true }
        : "default";
    const error = await rejection(client.typing(groupConversationId));
    expect(error).toMatchObject({ code: "rate_limited", retryable: true });
    expect(edge.framesOfType("typing")).toHaveLength(1);
    answer = "typingAck";
    await client.typing(groupConversationId);
    expect(edge.framesOfType("typing")).toHaveLength(2);
  });

  it("rejects with closed, sending nothing, while not connected", async () => {
    const { edge, client } = setup();
    expect(await rejection(client.typing(groupConversationId))).toMatchObject({ code: "closed", retryable: true });
    const connecting = client.connect();
    expect(await rejection(client.typing(groupConversationId))).toMatchObject({ code: "closed" });
    await connecting;
    expect(edge.framesOfType("typing")).toEqual([]);
  });

  it("sends every call with typingThrottleMs 0", async () => {
    const { edge, client } = setup({ typingThrottleMs: 0 });
    await client.connect();
    await client.typing(groupConversationId);
    await client.typing(groupConversationId);
    expect(edge.framesOfType("typing")).toHaveLength(2);
  });
});

describe("CellwireClient: typing indicators", () => {
  it("emits typing with its expiry, again on each refresh, and typingStopped once it lapses", async () => {
    const { edge, clock, client, typing, stopped } = setup();
    await client.connect();
    const startMs = clock.nowMs();
    edge.lastSocket.deliver(indicatorFrame("bob", "phone"));
    expect(typing).toEqual([
      { conversationId: groupConversationId, userId: "bob", deviceId: "phone", expiresInMs: 5000, expiresAtMs: startMs + 5000 },
    ]);
    clock.advanceBy(4000);
    edge.lastSocket.deliver(indicatorFrame("bob", "phone"));
    clock.advanceBy(4999);
    expect(stopped).toEqual([]);
    clock.advanceBy(1);
    expect(stopped).toEqual([{ conversationId: groupConversationId, userId: "bob", deviceId: "phone" }]);
    expect(typing).toHaveLength(2);
  });

  it("lets an indicator lapse across a reconnect, and stops every indicator when the client closes", async () => {
    const { edge, clock, client, stopped } = setup();
    await client.connect();
    edge.lastSocket.deliver(indicatorFrame("bob", "phone", 3000));
    edge.lastSocket.deliver(indicatorFrame("carol", "tablet", 10_000));
    edge.lastSocket.drop(closeCodes.going_away.code);
    clock.advanceBy(3000);
    await flush();
    expect(client.state).toBe("open");
    expect(stopped.map((entry) => entry.userId)).toEqual(["bob"]);
    client.close();
    expect(stopped.map((entry) => entry.userId)).toEqual(["bob", "carol"]);
    clock.advanceBy(10_000);
    expect(stopped).toHaveLength(2);
  });
});

describe("CellwireClient: watchPresence()", () => {
  it("resolves with the snapshot, then emits presence for changes of watched users only, once each", async () => {
    const { edge, client, presence } = setup();
    edge.presence.set("bob", { userId: "bob", status: "online", changedAtMs: 1_700_000_000_000 });
    await client.connect();
    const states = await client.watchPresence(["bob", "carol"]);
    expect(states).toEqual([
      { userId: "bob", status: "online", changedAtMs: 1_700_000_000_000 },
      { userId: "carol", status: "offline", changedAtMs: null },
    ]);
    expect(edge.framesOfType("watchPresence").map((frame) => frame.userIds)).toEqual([["bob", "carol"]]);
    expect(presence).toEqual([]);
    edge.lastSocket.deliver({ type: "presence", userId: "carol", status: "online", changedAtMs: 1_700_000_000_100 });
    edge.lastSocket.deliver({ type: "presence", userId: "carol", status: "online", changedAtMs: 1_700_000_000_100 });
    edge.lastSocket.deliver({ type: "presence", userId: "dave", status: "online", changedAtMs: 1_700_000_000_200 });
    edge.lastSocket.deliver({ type: "presence", userId: "bob", status: "offline", changedAtMs: 1_700_000_000_300 });
    expect(presence).toEqual([
      { userId: "carol", status: "online", changedAtMs: 1_700_000_000_100 },
      { userId: "bob", status: "offline", changedAtMs: 1_700_000_000_300 },
    ]);
  });

  it("replaces the watched set: frames about users no longer watched are dropped", async () => {
    const { edge, client, presence } = setup();
    await client.connect();
    await client.watchPresence(["bob"]);
    await client.watchPresence(["carol"]);
    edge.lastSocket.deliver({ type: "presence", userId: "bob", status: "online", changedAtMs: 1 });
    expect(presence).toEqual([]);
    expect(await client.watchPresence([])).toEqual([]);
    edge.lastSocket.deliver({ type: "presence", userId: "carol", status: "online", changedAtMs: 2 });
    expect(presence).toEqual([]);
  });

  it("refuses more than 100 users, a repeated user or an invalid id locally with invalid_field", async () => {
    const { edge, client } = setup();
    await client.connect();
    const tooMany = Array.from({ length: 101 }, (_, index) => `user${index}`);
    expect(await rejection(client.watchPresence(tooMany))).toMatchObject({ code: "invalid_field", retryable: false });
    expect(await rejection(client.watchPresence(["bob", "bob"]))).toMatchObject({ code: "invalid_field" });
    expect(await rejection(client.watchPresence(["victim.>"]))).toMatchObject({ code: "invalid_field" });
    expect(edge.framesOfType("watchPresence")).toEqual([]);
    await client.watchPresence(tooMany.slice(0, 100));
    expect(edge.framesOfType("watchPresence")).toHaveLength(1);
  });

  it("watches the set again after a reconnect and emits what changed meanwhile", async () => {
    const { edge, clock, client, presence } = setup();
    edge.presence.set("bob", { userId: "bob", status: "online", changedAtMs: 10 });
    await client.connect();
    await client.watchPresence(["bob", "carol"]);
    edge.lastSocket.drop(closeCodes.going_away.code);
    edge.presence.set("bob", { userId: "bob", status: "offline", changedAtMs: 20 });
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    const watches = edge.received.filter((entry) => entry.frame.type === "watchPresence");
    expect(watches.map((entry) => entry.socket)).toEqual([edge.sockets[0], edge.sockets[1]]);
    expect(edge.framesOfType("watchPresence").map((frame) => frame.userIds)).toEqual([
      ["bob", "carol"],
      ["bob", "carol"],
    ]);
    expect(presence).toEqual([{ userId: "bob", status: "offline", changedAtMs: 20 }]);
  });

  it("sends a watchPresence made while reconnecting once, after the welcome, and no second automatic one", async () => {
    const { edge, clock, client } = setup();
    await client.connect();
    await client.watchPresence(["bob"]);
    edge.lastSocket.drop(closeCodes.going_away.code);
    await flush();
    const watched = client.watchPresence(["carol"]);
    clock.advanceBy(100);
    await flush();
    expect(await watched).toEqual([{ userId: "carol", status: "offline", changedAtMs: null }]);
    expect(edge.framesOfType("watchPresence").map((frame) => frame.userIds)).toEqual([["bob"], ["carol"]]);
  });
});
