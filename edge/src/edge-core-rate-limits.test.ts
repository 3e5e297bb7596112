// The request rate limits through EdgeCore, in process (docs/protocol.md, "Rate limits"): each refused
// request is answered rate_limited with retryAfterMs and never reaches a cell; a user's sessions on one
// edge share the user's bucket; a large group's fan-out is charged after the message reached its members.
import { afterEach, describe, expect, it } from "vitest";
import type { Message } from "@cellwire/protocol";
import type { RateLimitSettings } from "./rate-limit/request-rate-limits.ts";
import { loadEdgeConfig } from "./config.ts";
import { fakeEdge, type FakeEdge, type FakeTransport } from "../test/edge-fakes.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";

const edges: FakeEdge[] = [];

afterEach(() => {
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

const generous = { perSecond: 1000, burst: 1000 };
/** Sends 2 a second per session (burst 3) and 3 per user (burst 4); history 1 a second (burst 2); conversation changes burst 1. */
const tight: RateLimitSettings = {
  perSession: {
    send: { perSecond: 2, burst: 3 },
    typing: generous,
    history: { perSecond: 1, burst: 2 },
    conversationChange: { perSecond: 1, burst: 1 },
    refresh: generous,
  },
  perUser: { send: { perSecond: 3, burst: 4 }, typing: generous, history: generous, conversationChange: generous, refresh: generous },
  fanOutPerUser: { perSecond: 100, burst: 200 },
};

function message(seq: number, senderDeviceId: string): Message {
  return {
    conversationId: groupId,
    messageId: `m-${seq}`,
    seq,
    senderUserId: "alice",
    senderDeviceId,
    clientMessageId: `c-${seq}`,
    body: "hi",
    sentAtMs: 1_700_000_000_000,
  };
}

function edgeWithGroup(rateLimits: RateLimitSettings = tight): FakeEdge {
  const edge = fakeEdge({ rateLimits });
  edges.push(edge);
  edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
  let seq = 0;
  edge.router.answers.set("cell.send", async (_cellId, request) => {
    if (request.type !== "cell.send") throw new Error("routed wrongly");
    seq++;
    return {
      type: "cell.stored",
      message: { ...message(seq, request.senderDeviceId), clientMessageId: request.clientMessageId },
      deduplicated: false,
    };
  });
  edge.router.answers.set("cell.history", async () => ({
    type: "cell.historyPage",
    conversationId: groupId,
    messages: [],
    hasMore: false,
  }));
  return edge;
}

async function device(edge: FakeEdge, deviceId: string): Promise<FakeTransport> {
  const { transport } = await edge.authenticated("alice", { token: `valid:alice:${deviceId}` });
  await transport.frame((frame) => frame["type"] === "synced");
  return transport;
}

function send(transport: FakeTransport, requestId: string): Promise<Record<string, unknown>> {
  transport.receiveJson({ type: "send", requestId, conversationId: groupId, clientMessageId: requestId, body: "hi" });
  return transport.frame((frame) => frame["requestId"] === requestId);
}

function history(transport: FakeTransport, requestId: string): Promise<Record<string, unknown>> {
  transport.receiveJson({ type: "history", requestId, conversationId: groupId });
  return transport.frame((frame) => frame["requestId"] === requestId);
}

describe("rate limits", () => {
  it("answers a send past the session's burst with rate_limited and retryAfterMs, asks no cell, and takes one again after it", async () => {
    const edge = edgeWithGroup();
    const phone = await device(edge, "phone");
    for (const requestId of ["s1", "s2", "s3"]) expect(await send(phone, requestId)).toMatchObject({ type: "ack" });
    expect(await send(phone, "s4")).toEqual({
      type: "error",
      requestId: "s4",
      code: "rate_limited",
      message: expect.stringContaining("send"),
      retryable: true,
      retryAfterMs: 500,
    });
    expect(edge.router.requestsOf("cell.send")).toHaveLength(3);
    edge.clock.advance(499);
    expect(await send(phone, "s5")).toMatchObject({ code: "rate_limited", retryAfterMs: 1 });
    edge.clock.advance(1);
    expect(await send(phone, "s6")).toMatchObject({ type: "ack" });
    expect(edge.router.requestsOf("cell.send")).toHaveLength(4);
    // The session stays open and serves other requests.
    phone.receiveJson({ type: "ping", requestId: "p1" });
    expect(await phone.frame((frame) => frame["requestId"] === "p1")).toEqual({ type: "pong", requestId: "p1" });
    expect(phone.closeCode).toBeUndefined();
  });

  it("shares the user's bucket between the user's sessions on the edge, not with other users", async () => {
    const edge = edgeWithGroup();
    const phone = await device(edge, "phone");
    const laptop = await device(edge, "laptop");
    for (const requestId of ["p1", "p2", "p3"]) expect(await send(phone, requestId)).toMatchObject({ type: "ack" });
    // The laptop has 3 of its own but the user only 1 left.
    expect(await send(laptop, "l1")).toMatchObject({ type: "ack" });
    expect(await send(laptop, "l2")).toMatchObject({ code: "rate_limited", retryAfterMs: 334 });
    // A session opened later still shares it; the bucket lives as long as one of the user's sessions.
    const tablet = await device(edge, "tablet");
    expect(await send(tablet, "t1")).toMatchObject({ code: "rate_limited" });
    const { transport: bob } = await edge.authenticated("bob", { token: "valid:bob:phone" });
    await bob.frame((frame) => frame["type"] === "synced");
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    expect(await send(bob, "b1")).toMatchObject({ type: "ack" });
  });

  it("makes no buckets for an idle session: they come with its first rate-limited request, shared with the user's sessions", async () => {
    const edge = edgeWithGroup();
    const { transport: phone, session: phoneSession } = await edge.authenticated("alice", { token: "valid:alice:phone" });
    const { session: laptopSession } = await edge.authenticated("alice", { token: "valid:alice:laptop" });
    phone.receiveJson({ type: "ping", requestId: "p1" });
    await phone.frame((frame) => frame["requestId"] === "p1");
    expect(phoneSession.userRateLimits).toBeUndefined();
    expect(laptopSession.userRateLimits).toBeUndefined();
    expect(await send(phone, "s1")).toMatchObject({ type: "ack" });
    expect(phoneSession.userRateLimits).toBeDefined();
    expect(laptopSession.userRateLimits).toBeUndefined();
    expect(edge.core.userRateLimits("alice")).toBe(phoneSession.userRateLimits);
  });

  it("limits history and conversation changes with their own buckets", async () => {
    const edge = edgeWithGroup();
    const phone = await device(edge, "phone");
    expect(await history(phone, "h1")).toMatchObject({ type: "historyPage" });
    expect(await history(phone, "h2")).toMatchObject({ type: "historyPage" });
    expect(await history(phone, "h3")).toMatchObject({ code: "rate_limited", retryAfterMs: 1000 });
    expect(edge.router.requestsOf("cell.history")).toHaveLength(2);
    // Sends are a bucket of their own.
    expect(await send(phone, "s1")).toMatchObject({ type: "ack" });
    phone.receiveJson({ type: "createGroup", requestId: "g1", title: "one", memberUserIds: ["bob"] });
    await phone.frame((frame) => frame["requestId"] === "g1");
    phone.receiveJson({ type: "openDirect", requestId: "d1", peerUserId: "bob" });
    expect(await phone.frame((frame) => frame["requestId"] === "d1")).toMatchObject({ code: "rate_limited", retryAfterMs: 1000 });
    phone.receiveJson({ type: "addMembers", requestId: "a1", conversationId: groupId, userIds: ["carol"] });
    expect(await phone.frame((frame) => frame["requestId"] === "a1")).toMatchObject({ code: "rate_limited" });
    expect(edge.router.requestsOf("cell.openDirect")).toEqual([]);
    expect(edge.router.requestsOf("cell.addMembers")).toEqual([]);
  });

  it("charges a large group's fan-out to the sender after its message reached the members, once, on the sending device", async () => {
    const edge = edgeWithGroup({
      ...tight,
      perSession: { ...tight.perSession, send: generous },
      perUser: { ...tight.perUser, send: generous },
    });
    const phone = await device(edge, "phone");
    const laptop = await device(edge, "laptop");
    const members = Array.from({ length: 150 }, (_, index) => (index === 0 ? "alice" : `member${index}`));
    expect(await send(phone, "s1")).toMatchObject({ type: "ack" });
    // 150 recipients, charged on the phone only (the laptop receives the message too): 200 - 150 = 50 left.
    edge.deliveries.publishBatch({
      type: "delivery.batch",
      messages: [{ recipientUserIds: members, message: message(1, "phone") }],
      events: [],
      typing: [],
    });
    expect(await send(phone, "s2")).toMatchObject({ type: "ack" });
    edge.deliveries.publishBatch({
      type: "delivery.batch",
      messages: [{ recipientUserIds: members, message: message(2, "phone") }],
      events: [],
      typing: [],
    });
    // 50 - 150: a debt of 100 recipients, paid off at 100 a second. Every session of the user waits.
    expect(await send(phone, "s3")).toMatchObject({ code: "rate_limited", retryAfterMs: 1000 });
    expect(await send(laptop, "l1")).toMatchObject({ code: "rate_limited", retryAfterMs: 1000 });
    expect(await history(phone, "h1")).toMatchObject({ type: "historyPage" });
    edge.clock.advance(1000);
    expect(await send(phone, "s4")).toMatchObject({ type: "ack" });
    expect(edge.router.requestsOf("cell.send")).toHaveLength(3);
  });

  it("lets the chat benchmark's user, 13 sends a second, through the default limits (past the burst), in a group of 100", async () => {
    const edge = edgeWithGroup(loadEdgeConfig({ EDGE_AUTH_MODE: "dev" }).config.rateLimits);
    const phone = await device(edge, "phone");
    const members = Array.from({ length: 100 }, (_, index) => (index === 0 ? "alice" : `member${index}`));
    for (let index = 0; index < 13 * 10; index++) {
      expect(await send(phone, `s${index}`)).toMatchObject({ type: "ack" });
      edge.deliveries.publishBatch({
        type: "delivery.batch",
        messages: [{ recipientUserIds: members, message: message(index + 1, "phone") }],
        events: [],
        typing: [],
      });
      edge.clock.advance(1000 / 13);
    }
  });
});
