// The edge's rate limits on the real topology (docs/protocol.md, "Rate limits"), with their default
// settings: one client floods sends, typing, history and conversation changes; each request past its
// bucket is answered rate_limited with a retryAfterMs and not done, every request gets one reply, the
// edge stays up and keeps the flooding session open, another pair of users chats on the same edge
// meanwhile, and the flooder is served again once it waits as asked.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient, type Message } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { protocolVersion, retryAfterMsMax } from "@cellwire/protocol";
import { RawSocket } from "../test/raw-socket.ts";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

/** The defaults these assertions rest on (edge/src/config.ts; docs/protocol.md). */
const sendBurst = 40;
const typingBurst = 8;
const historyBurst = 50;
const conversationChangeBurst = 50;
/** Tokens refilled while a flood is answered on a loaded machine: a few seconds' worth at most. */
const refillSlack = 20;
const replyDeadlineMs = 30_000;

let test: TestTopology;
const clients: CellwireClient[] = [];
const sockets: RawSocket[] = [];

function edgeUrl(): string {
  const edge = test.topology.edges[0];
  if (edge === undefined) throw new Error("no edge");
  return edge.webSocketUrl;
}

async function rawSession(userId: string): Promise<RawSocket> {
  const socket = await RawSocket.open(edgeUrl());
  sockets.push(socket);
  socket.send(
    JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, userId), deviceId: "raw" }),
  );
  await socket.frame((frame) => frame["type"] === "welcome", replyDeadlineMs);
  return socket;
}

async function sdkClient(userId: string): Promise<{ client: CellwireClient; messages: Message[] }> {
  const client = new CellwireClient({
    url: edgeUrl(),
    deviceId: "phone",
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId: "phone" }),
  });
  clients.push(client);
  const messages: Message[] = [];
  client.on("message", (message) => messages.push(message));
  await client.connect();
  return { client, messages };
}

/** Sends every frame at once, then waits for the one reply of each; returns the replies in request order. */
async function flood(socket: RawSocket, frames: readonly Record<string, unknown>[]): Promise<Record<string, unknown>[]> {
  const fromIndex = socket.frames.length;
  for (const frame of frames) socket.send(JSON.stringify(frame));
  const replies: Record<string, unknown>[] = [];
  for (const frame of frames)
    replies.push(await socket.frame((reply) => reply["requestId"] === frame["requestId"], replyDeadlineMs, fromIndex));
  // Exactly one reply per request, none twice.
  const replyIds = socket.frames.slice(fromIndex).flatMap((received) => {
    const value = received.value;
    return typeof value === "object" && value !== null && "requestId" in value
      ? [String((value as Record<string, unknown>)["requestId"])]
      : [];
  });
  expect(new Set(replyIds).size).toBe(replyIds.length);
  return replies;
}

/** Each refusal is rate_limited, retryable, with a whole retryAfterMs above 0 and within the protocol's bound. */
function refusalsOf(replies: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  const refusals = replies.filter((reply) => reply["type"] === "error");
  for (const refusal of refusals) {
    expect(refusal).toMatchObject({ code: "rate_limited", retryable: true });
    const retryAfterMs = refusal["retryAfterMs"];
    expect(Number.isSafeInteger(retryAfterMs)).toBe(true);
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(retryAfterMsMax);
  }
  return refusals;
}

afterAll(async () => {
  for (const client of clients) client.close();
  for (const socket of sockets) socket.close();
});

describe("rate limits", () => {
  beforeAll(async () => {
    test = await startTestTopology({ label: "ratelim", cells: [{ cellId: "a", workerCount: 1 }], edgeCount: 1 });
  });

  afterAll(async () => {
    await test?.destroy();
  });

  it("refuses a flood of sends, typing, history and conversation changes with rate_limited and retryAfterMs; the edge stays up and others chat", async () => {
    const flooder = await rawSession("flooder");
    flooder.send(JSON.stringify({ type: "openDirect", requestId: "open", peerUserId: "peer" }));
    const opened = await flooder.frame((frame) => frame["requestId"] === "open", replyDeadlineMs);
    const conversationId = String((opened["conversation"] as Record<string, unknown>)["conversationId"]);

    const bob = await sdkClient("bob");
    const carol = await sdkClient("carol");
    const chat = await bob.client.openDirect("carol");

    // Sends: the session's burst goes through, the rest is refused at once; bob chats meanwhile.
    const sendFrames = Array.from({ length: 200 }, (_, index) => ({
      type: "send",
      requestId: `s${index}`,
      conversationId,
      clientMessageId: `flood-${index}`,
      body: `flood ${index}`,
    }));
    const [sendReplies] = await Promise.all([flood(flooder, sendFrames), bob.client.send(chat.conversationId, "during the flood")]);
    const acks = sendReplies.filter((reply) => reply["type"] === "ack");
    expect(acks.length).toBeGreaterThanOrEqual(sendBurst);
    expect(acks.length).toBeLessThanOrEqual(sendBurst + refillSlack);
    expect(refusalsOf(sendReplies)).toHaveLength(sendFrames.length - acks.length);

    // Typing: one per conversation a second by the typing limit, the rest refused by it or by the bucket.
    const typingFrames = Array.from({ length: 50 }, (_, index) => ({ type: "typing", requestId: `t${index}`, conversationId }));
    const typingReplies = await flood(flooder, typingFrames);
    expect(typingReplies.filter((reply) => reply["type"] === "typingAck").length).toBeLessThanOrEqual(1 + typingBurst);
    expect(refusalsOf(typingReplies).length).toBeGreaterThanOrEqual(typingFrames.length - 1 - typingBurst);

    const historyFrames = Array.from({ length: 120 }, (_, index) => ({
      type: "history",
      requestId: `h${index}`,
      conversationId,
      limit: 1,
    }));
    const historyReplies = await flood(flooder, historyFrames);
    const pages = historyReplies.filter((reply) => reply["type"] === "historyPage");
    expect(pages.length).toBeGreaterThanOrEqual(historyBurst - refillSlack);
    expect(pages.length).toBeLessThanOrEqual(historyBurst + refillSlack);
    expect(refusalsOf(historyReplies)).toHaveLength(historyFrames.length - pages.length);

    const openFrames = Array.from({ length: 60 }, (_, index) => ({
      type: "openDirect",
      requestId: `o${index}`,
      peerUserId: `peer${index % 5}`,
    }));
    const openReplies = await flood(flooder, openFrames);
    const opens = openReplies.filter((reply) => reply["type"] === "conversation");
    // One change (the first openDirect) was spent already.
    expect(opens.length).toBeLessThanOrEqual(conversationChangeBurst - 1 + refillSlack);
    expect(refusalsOf(openReplies)).toHaveLength(openFrames.length - opens.length);
    expect(refusalsOf(openReplies).length).toBeGreaterThan(0);

    // The flooding session is still open and served; the edge is up.
    flooder.send(JSON.stringify({ type: "ping", requestId: "alive" }));
    expect(await flooder.frame((frame) => frame["requestId"] === "alive", replyDeadlineMs)).toEqual({ type: "pong", requestId: "alive" });
    expect(flooder.closeCode).toBeUndefined();
    const health = await fetch(new URL("healthz", test.topology.edges[0]?.httpUrl));
    expect(health.status).toBe(200);

    // Another pair chats both ways on the same edge.
    await carol.client.send(chat.conversationId, "after the flood");
    await waitFor(
      () =>
        bob.messages.some((message) => message.body === "after the flood") &&
        carol.messages.some((message) => message.body === "during the flood"),
      "bob and carol to receive each other's messages",
    );

    // The flooder waits as asked and is served again.
    const last = refusalsOf(sendReplies).at(-1);
    await new Promise((resolve) => setTimeout(resolve, Number(last?.["retryAfterMs"] ?? 0) + 100));
    flooder.send(JSON.stringify({ type: "send", requestId: "again", conversationId, clientMessageId: "again", body: "after waiting" }));
    expect(await flooder.frame((frame) => frame["requestId"] === "again", replyDeadlineMs)).toMatchObject({ type: "ack" });
  }, 120_000);
});

describe("the fan-out of sends to a group", () => {
  // Slow, so that the debt outlasts a slow machine's round trips: 10 recipients take 5 s to pay off.
  const fanOutPerSecond = 2;
  const fanOutBurst = 20;

  beforeAll(async () => {
    test = await startTestTopology({
      label: "fanout",
      cells: [{ cellId: "a", workerCount: 1 }],
      edgeCount: 1,
      extraEnvironment: {
        EDGE_RATE_FAN_OUT_PER_USER_PER_SECOND: String(fanOutPerSecond),
        EDGE_RATE_FAN_OUT_PER_USER_BURST: String(fanOutBurst),
      },
    });
  });

  afterAll(async () => {
    await test?.destroy();
  });

  it("is charged to the sender after each message reached the group's members; past the burst the sender's sends wait, the other members' do not", async () => {
    const sender = await rawSession("announcer");
    const others = Array.from({ length: 9 }, (_, index) => `listener${index}`);
    sender.send(JSON.stringify({ type: "createGroup", requestId: "group", title: "announcements", memberUserIds: others }));
    const created = await sender.frame((frame) => frame["requestId"] === "group", replyDeadlineMs);
    const conversationId = String((created["conversation"] as Record<string, unknown>)["conversationId"]);
    const sendAndSee = async (index: number): Promise<Record<string, unknown>> => {
      const fromIndex = sender.frames.length;
      sender.send(
        JSON.stringify({ type: "send", requestId: `g${index}`, conversationId, clientMessageId: `g-${index}`, body: `news ${index}` }),
      );
      const reply = await sender.frame((frame) => frame["requestId"] === `g${index}`, replyDeadlineMs, fromIndex);
      // The edge charges when the message comes back to the sending session with its recipients.
      if (reply["type"] === "ack")
        await sender.frame(
          (frame) => frame["type"] === "message" && (frame["message"] as Record<string, unknown>)["clientMessageId"] === `g-${index}`,
          replyDeadlineMs,
          fromIndex,
        );
      return reply;
    };
    // 20 - 10 - 10 = 0: not in debt yet, so the third goes too, and leaves a debt of 10 recipients.
    for (const index of [1, 2, 3]) expect(await sendAndSee(index)).toMatchObject({ type: "ack" });
    const refused = await sendAndSee(4);
    expect(refused).toMatchObject({ type: "error", code: "rate_limited", retryable: true });
    // At most 5 s (a debt of 10 recipients at 2 a second), less what has refilled since.
    expect(refused["retryAfterMs"]).toBeGreaterThan(0);
    expect(refused["retryAfterMs"]).toBeLessThanOrEqual((10 / fanOutPerSecond) * 1000);
    // A member who has sent nothing is not held back by the announcer's fan-out.
    const listener = await rawSession("listener0");
    listener.send(JSON.stringify({ type: "send", requestId: "l1", conversationId, clientMessageId: "l-1", body: "thanks" }));
    expect(await listener.frame((frame) => frame["requestId"] === "l1", replyDeadlineMs)).toMatchObject({ type: "ack" });
    await new Promise((resolve) => setTimeout(resolve, Number(refused["retryAfterMs"]) + 50));
    expect(await sendAndSee(5)).toMatchObject({ type: "ack" });
  }, 120_000);
});

function waitFor(condition: () => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const startedAt = performance.now();
    const check = (): void => {
      if (condition()) return resolve();
      if (performance.now() - startedAt > replyDeadlineMs) return reject(new Error(`waited ${replyDeadlineMs} ms for ${what}`));
      setTimeout(check, 20);
    };
    check();
  });
}
