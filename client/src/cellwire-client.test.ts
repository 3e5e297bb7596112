// Follows client/BEHAVIOUR.md against an in-memory edge (client/test/fake-edge.ts) and a manual clock: no
// network, no sleeping. Every frame the client writes is checked by the protocol's decoder.
import { closeCodes, frameBytesMax, protocolVersion, standardCloseCodes, type ServerFrame } from "@cellwire/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientOptions, type StateChange, type TokenRequest } from "./cellwire-client.ts";
import { CellwireClientError } from "./errors.ts";
import { FakeEdge, directConversationId, fakeEdgeNetwork, flush, groupConversationId } from "../test/fake-edge.ts";
import { ManualClock } from "../test/manual-clock.ts";

const edges: FakeEdge[] = [];

afterEach(() => {
  // The client never wrote a frame the real edge would refuse.
  for (const edge of edges.splice(0)) expect(edge.invalidTexts).toEqual([]);
});

function setup(overrides: Partial<CellwireClientOptions> = {}) {
  const edge = new FakeEdge("alice");
  edges.push(edge);
  const clock = new ManualClock();
  const tokenRequests: TokenRequest[] = [];
  const errors: CellwireClientError[] = [];
  const states: StateChange[] = [];
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async (request) => {
      tokenRequests.push(request);
      return `token-${tokenRequests.length}`;
    },
    deviceId: "laptop",
    WebSocket: edge.WebSocket,
    clock,
    // Every backoff delay at its bound: 100, 200, 400… for reconnects, 50, 100, 200 for retries.
    random: () => 0,
    backoff: { initialDelayMs: 100, delayMsMax: 1000, multiplier: 2, jitterRatio: 0.5 },
    retryBackoff: { initialDelayMs: 50, delayMsMax: 200, multiplier: 2, jitterRatio: 0.5 },
    ...overrides,
  });
  client.on("error", (error) => errors.push(error));
  client.on("state", (change) => states.push(change));
  return { edge, clock, client, tokenRequests, errors, states };
}

async function rejection(promise: Promise<unknown>): Promise<CellwireClientError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof CellwireClientError)) throw new Error(`expected a CellwireClientError rejection, got ${String(outcome)}`);
  return outcome;
}

function parsedTexts(texts: readonly string[]): unknown[] {
  return texts.map((text) => JSON.parse(text) as unknown);
}

describe("CellwireClient: connecting", () => {
  it("sends hello first (protocol version, token, deviceId) and resolves connect() with the welcome", async () => {
    const { edge, client, states, tokenRequests } = setup();
    const welcome = await client.connect();
    expect(welcome).toMatchObject({ userId: "alice", deviceId: "laptop", cellId: "a", heartbeatIntervalMs: 30_000 });
    expect(edge.sockets).toHaveLength(1);
    expect(edge.lastSocket.url).toBe("ws://edge.test/ws");
    // Protocol 2: conversations read from their logs (docs/decisions/0009).
    expect(protocolVersion).toBe(2);
    expect(parsedTexts(edge.lastSocket.sentTexts)).toEqual([{ type: "hello", protocolVersion: 2, token: "token-1", deviceId: "laptop" }]);
    expect(states.map((change) => change.state)).toEqual(["connecting", "authenticating", "open"]);
    expect(tokenRequests).toEqual([{ reason: "connect" }]);
    expect(client.state).toBe("open");
    // Already open: resolves at once, without a second socket.
    await expect(client.connect()).resolves.toEqual(welcome);
    expect(edge.sockets).toHaveLength(1);
  });

  it("emits a welcome event on every session", async () => {
    const { edge, clock, client } = setup();
    const sessions: string[] = [];
    client.on("welcome", (welcome) => sessions.push(welcome.sessionId));
    await client.connect();
    edge.lastSocket.drop(closeCodes.going_away.code);
    clock.advanceBy(100);
    await flush();
    expect(sessions).toEqual(["s1", "s2"]);
  });

  it("abandons an attempt that gets no welcome within connectTimeoutMs, then retries", async () => {
    const { edge, clock, client } = setup({ connectTimeoutMs: 2000 });
    edge.onHello = () => "ignore";
    const connected = client.connect();
    await flush();
    expect(client.state).toBe("authenticating");
    clock.advanceBy(2000);
    expect(edge.sockets[0]?.closedByClientWithCode).toBe(standardCloseCodes.normal);
    expect(client.state).toBe("waiting_to_reconnect");
    edge.onHello = () => "welcome";
    clock.advanceBy(100);
    await expect(connected).resolves.toMatchObject({ sessionId: "s2" });
  });

  it("reports a failing token provider as token_unavailable and tries again after a backoff delay", async () => {
    let calls = 0;
    const { edge, clock, client, errors } = setup({
      tokenProvider: async () => {
        calls += 1;
        if (calls === 1) throw new Error("auth service down");
        return "token-ok";
      },
    });
    const connected = client.connect();
    await flush();
    expect(errors.map((error) => error.code)).toEqual(["token_unavailable"]);
    expect(errors[0]?.message).toContain("auth service down");
    expect(client.state).toBe("waiting_to_reconnect");
    expect(edge.sockets).toHaveLength(0);
    clock.advanceBy(100);
    await expect(connected).resolves.toMatchObject({ userId: "alice" });
    expect(parsedTexts(edge.lastSocket.sentTexts)[0]).toMatchObject({ token: "token-ok" });
  });

  it("gives up after reconnectAttemptsMax consecutive failed attempts", async () => {
    const { edge, clock, client, states } = setup({ reconnectAttemptsMax: 2 });
    edge.autoAccept = false;
    const connected = client.connect();
    for (let attempt = 0; attempt < 3; attempt++) {
      await flush();
      edge.lastSocket.drop(standardCloseCodes.abnormal);
      clock.advanceBy(1000);
    }
    const error = await rejection(connected);
    expect(error.code).toBe("closed");
    expect(edge.sockets).toHaveLength(3);
    expect(states.at(-1)).toMatchObject({ state: "closed", closedReason: "reconnect_limit" });
  });

  it("refuses a URL that is not ws: or wss:, and a malformed deviceId", () => {
    const edge = new FakeEdge();
    const base = { tokenProvider: async () => "t", WebSocket: edge.WebSocket };
    expect(() => new CellwireClient({ ...base, url: "http://edge.test/ws" })).toThrow(/ws: or wss:/);
    expect(() => new CellwireClient({ ...base, url: "not a url" })).toThrow(TypeError);
    expect(() => new CellwireClient({ ...base, url: "ws://edge.test/ws", deviceId: "bad device" })).toThrow(/deviceId/);
    expect(() => new CellwireClient({ ...base, url: "ws://edge.test/ws", requestTimeoutMs: 0 })).toThrow(RangeError);
    expect(() => new CellwireClient({ ...base, url: "ws://edge.test/ws", resumeAfterSeq: -1 })).toThrow(/resumeAfterSeq/);
    expect(() => new CellwireClient({ ...base, url: "ws://edge.test/ws", resumeAfterSeq: 1.5 })).toThrow(RangeError);
  });

  it("refuses stored conversation cursors the edge would refuse (the hello would be closed with 4200, for good)", () => {
    const edge = new FakeEdge();
    const base = { tokenProvider: async () => "t", WebSocket: edge.WebSocket, url: "ws://edge.test/ws", resumeAfterSeq: 0 };
    expect(() => new CellwireClient({ ...base, resumeConversations: { "not-a-conversation": 1 } })).toThrow(/invalid conversation id/);
    expect(() => new CellwireClient({ ...base, resumeConversations: { [directConversationId]: -1 } })).toThrow(RangeError);
    expect(() => new CellwireClient({ ...base, resumeConversations: { [directConversationId]: 2.5 } })).toThrow(RangeError);
    const tooMany = Object.fromEntries(Array.from({ length: 10_001 }, (_, index) => [`g-${String(index).padStart(22, "0")}`, 1]));
    expect(() => new CellwireClient({ ...base, resumeConversations: tooMany })).toThrow(/at most 10000/);
    expect(new CellwireClient({ ...base, resumeConversations: { [directConversationId]: 4 } }).positions()).toEqual({
      mailboxSeq: undefined,
      conversations: { [directConversationId]: 4 },
    });
  });

  it("refuses an empty URL list, a duplicate URL, and a list with a URL that is not ws: or wss:", () => {
    const edge = new FakeEdge();
    const base = { tokenProvider: async () => "t", WebSocket: edge.WebSocket };
    expect(() => new CellwireClient({ ...base, url: [] })).toThrow(/non-empty/);
    expect(() => new CellwireClient({ ...base, url: ["ws://a.test/ws", "ws://a.test/ws"] })).toThrow(/twice/);
    expect(() => new CellwireClient({ ...base, url: ["ws://a.test/ws", "http://b.test/ws"] })).toThrow(/ws: or wss:/);
    expect(new CellwireClient({ ...base, url: ["ws://a.test/ws", "ws://b.test/ws"] }).url).toBe("ws://a.test/ws");
  });
});

describe("CellwireClient: requests", () => {
  it("send resolves with the ack; the default clientMessageId is a random UUID", async () => {
    const { edge, client } = setup();
    await client.connect();
    const ack = await client.send(directConversationId, "hello there");
    expect(ack).toMatchObject({ conversationId: directConversationId, messageId: "m1", seq: 1 });
    expect(ack.clientMessageId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const [frame] = edge.framesOfType("send");
    expect(frame).toMatchObject({ conversationId: directConversationId, body: "hello there", clientMessageId: ack.clientMessageId });
    const second = await client.send(directConversationId, "again", { clientMessageId: "my-id-2" });
    expect(second).toMatchObject({ seq: 2, clientMessageId: "my-id-2" });
    expect(client.pendingRequestCount).toBe(0);
  });

  it("openDirect, createGroup, addMembers and history resolve with their replies", async () => {
    const { client } = setup();
    await client.connect();
    await expect(client.openDirect("bob")).resolves.toMatchObject({
      conversationId: directConversationId,
      kind: "direct",
      memberUserIds: ["alice", "bob"],
    });
    await expect(client.createGroup("team", ["bob", "carol"])).resolves.toMatchObject({
      conversationId: groupConversationId,
      title: "team",
    });
    await expect(client.addMembers(groupConversationId, ["dave"])).resolves.toMatchObject({ memberUserIds: ["alice", "dave"] });
    for (const body of ["one", "two", "three"]) await client.send(directConversationId, body);
    const page = await client.history(directConversationId, { beforeSeq: 3, limit: 1 });
    expect(page).toEqual({
      conversationId: directConversationId,
      messages: [expect.objectContaining({ seq: 2, body: "two" })],
      hasMore: true,
    });
  });

  it("an error reply rejects with the frame's code, message and retryable flag", async () => {
    const { edge, client } = setup();
    edge.onRequest = (frame) =>
      frame.type === "send"
        ? {
            type: "error",
            requestId: frame.requestId,
            code: "not_a_member",
            message: "not a member of this conversation",
            retryable: false,
          }
        : "default";
    await client.connect();
    const error = await rejection(client.send(directConversationId, "hi"));
    expect(error).toMatchObject({
      name: "CellwireClientError",
      code: "not_a_member",
      message: "not a member of this conversation",
      retryable: false,
    });
    expect(edge.framesOfType("send")).toHaveLength(1);
  });

  it("retries a send after retryable errors with backoff and the same clientMessageId", async () => {
    const { edge, clock, client } = setup();
    let failuresLeft = 2;
    edge.onRequest = (frame) => {
      if (frame.type !== "send" || failuresLeft === 0) return "default";
      failuresLeft -= 1;
      return { type: "error", requestId: frame.requestId, code: "cell_unavailable", message: "try later", retryable: true };
    };
    await client.connect();
    const sent = client.send(directConversationId, "persist", { clientMessageId: "cm-retry" });
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    clock.advanceBy(49);
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(1);
    clock.advanceBy(1);
    await flush();
    clock.advanceBy(100);
    await expect(sent).resolves.toMatchObject({ seq: 1, clientMessageId: "cm-retry" });
    const frames = edge.framesOfType("send");
    expect(frames.map((frame) => frame.clientMessageId)).toEqual(["cm-retry", "cm-retry", "cm-retry"]);
    expect(new Set(frames.map((frame) => frame.requestId)).size).toBe(3);
  });

  it("retries the sends of one conversation in call order, holding later sends until an earlier one waiting for its retry goes out", async () => {
    const { edge, clock, client } = setup();
    const firstAnswers = new Map<string, "out_of_order" | "slow">([
      ["c0", "slow"],
      ["c1", "out_of_order"],
      ["c2", "out_of_order"],
    ]);
    edge.onRequest = (frame) => {
      if (frame.type !== "send") return "default";
      const answer = firstAnswers.get(frame.clientMessageId);
      firstAnswers.delete(frame.clientMessageId);
      // c0's cell was busy and asked for 150 ms; c1 and c2 arrived before c0 was stored (docs/decisions/0020).
      if (answer === "slow")
        return { type: "error", requestId: frame.requestId, code: "overloaded", message: "busy", retryable: true, retryAfterMs: 150 };
      if (answer === "out_of_order")
        return { type: "error", requestId: frame.requestId, code: "out_of_order", message: "c0 first", retryable: true };
      return "default";
    };
    await client.connect();
    const sends = ["c0", "c1", "c2"].map((clientMessageId) => client.send(groupConversationId, clientMessageId, { clientMessageId }));
    const other = client.send(directConversationId, "elsewhere", { clientMessageId: "d0" });
    await flush();
    clock.advanceBy(10);
    // A new send to the conversation while c0 waits for its retry waits too; another conversation's does not.
    const later = client.send(groupConversationId, "c3", { clientMessageId: "c3" });
    const another = client.send(directConversationId, "elsewhere too", { clientMessageId: "d1" });
    await flush();
    expect(edge.framesOfType("send").map((frame) => frame.clientMessageId)).toEqual(["c0", "c1", "c2", "d0", "d1"]);
    // c1 and c2's own retries fall due at 50 ms: they still wait for c0's, at 150 ms.
    clock.advanceBy(40);
    await flush();
    expect(edge.framesOfType("send").map((frame) => frame.clientMessageId)).toEqual(["c0", "c1", "c2", "d0", "d1"]);
    clock.advanceBy(100);
    await flush();
    expect(edge.framesOfType("send").map((frame) => frame.clientMessageId)).toEqual(["c0", "c1", "c2", "d0", "d1", "c0", "c1", "c2", "c3"]);
    const acks = await Promise.all([...sends, later, other, another]);
    expect(acks.map((ack) => ack.clientMessageId)).toEqual(["c0", "c1", "c2", "c3", "d0", "d1"]);
  });

  it("rejects with the error after requestRetriesMax retries, and never retries a non-idempotent request", async () => {
    const { edge, clock, client } = setup({ requestRetriesMax: 2 });
    edge.onRequest = (frame) => ({ type: "error", requestId: frame.requestId, code: "internal", message: "boom", retryable: true });
    await client.connect();
    const sent = rejection(client.send(directConversationId, "doomed"));
    for (let round = 0; round < 4; round++) {
      await flush();
      clock.advanceBy(1000);
    }
    expect(await sent).toMatchObject({ code: "internal", retryable: true });
    expect(edge.framesOfType("send")).toHaveLength(3);

    const added = rejection(client.addMembers(groupConversationId, ["dave"]));
    await flush();
    clock.advanceBy(1000);
    expect(await added).toMatchObject({ code: "internal", retryable: true });
    expect(edge.framesOfType("addMembers")).toHaveLength(1);
  });

  it("rejects with timeout when no reply comes within requestTimeoutMs", async () => {
    const { edge, clock, client } = setup({ requestTimeoutMs: 3000 });
    edge.onRequest = (frame) => (frame.type === "history" ? "ignore" : "default");
    await client.connect();
    const page = client.history(directConversationId);
    await flush();
    clock.advanceBy(2999);
    await flush();
    expect(client.pendingRequestCount).toBe(1);
    clock.advanceBy(1);
    expect(await rejection(page)).toMatchObject({ code: "timeout", retryable: true });
    expect(client.pendingRequestCount).toBe(0);
    // A late reply for the abandoned request is ignored.
    const [frame] = edge.framesOfType("history");
    if (frame === undefined) throw new Error("history was not sent");
    edge.lastSocket.deliver(edge.defaultReply(frame));
    await flush();
    expect(client.state).toBe("open");
  });

  it("rejects beyond pendingRequestsMax with too_many_pending", async () => {
    const { edge, client } = setup({ pendingRequestsMax: 2 });
    edge.onRequest = () => "ignore";
    await client.connect();
    void client.send(directConversationId, "one").catch(() => {});
    void client.send(directConversationId, "two").catch(() => {});
    expect(await rejection(client.send(directConversationId, "three"))).toMatchObject({ code: "too_many_pending", retryable: true });
    expect(client.pendingRequestCount).toBe(2);
    client.close();
  });

  it("rejects requests before connect() and after close() with closed", async () => {
    const { client } = setup();
    expect(await rejection(client.send(directConversationId, "early"))).toMatchObject({ code: "closed", retryable: false });
    await client.connect();
    client.close();
    expect(await rejection(client.openDirect("bob"))).toMatchObject({ code: "closed" });
  });

  it("refuses locally a frame the edge would close the socket for (over frameBytesMax)", async () => {
    const { edge, client } = setup();
    await client.connect();
    // Two UTF-8 bytes per character: the frame exceeds the limit in bytes, whatever its length in characters.
    const error = await rejection(client.send(directConversationId, "é".repeat(Math.ceil(frameBytesMax / 2) + 1)));
    expect(error).toMatchObject({ code: "invalid_field", retryable: false });
    expect(edge.framesOfType("send")).toHaveLength(0);
  });
});

describe("CellwireClient: reconnecting", () => {
  it("sends a pending send again after a drop, with the same clientMessageId, and settles it once", async () => {
    const { edge, clock, client, tokenRequests, states } = setup();
    // The first edge stores the message but the connection dies before its ack.
    edge.onRequest = (frame, socket) => {
      if (frame.type === "send" && socket === edge.sockets[0]) {
        edge.store(frame.conversationId, frame.clientMessageId, frame.body);
        return "ignore";
      }
      return "default";
    };
    await client.connect();
    let settlements = 0;
    const sent = client.send(directConversationId, "survive", { clientMessageId: "cm-1" }).finally(() => {
      settlements += 1;
    });
    await flush();
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    await flush();
    expect(client.state).toBe("waiting_to_reconnect");
    expect(states.at(-1)).toMatchObject({ state: "waiting_to_reconnect", closeCode: standardCloseCodes.abnormal, reconnectDelayMs: 100 });
    expect(client.pendingRequestCount).toBe(1);

    clock.advanceBy(100);
    const ack = await sent;
    expect(ack).toMatchObject({ seq: 1, messageId: "m1", clientMessageId: "cm-1" });
    const frames = edge.framesOfType("send");
    expect(frames.map((frame) => frame.clientMessageId)).toEqual(["cm-1", "cm-1"]);
    expect(frames[0]?.requestId).not.toBe(frames[1]?.requestId);
    expect(edge.storedMessages(directConversationId)).toHaveLength(1);
    expect(tokenRequests).toEqual([{ reason: "connect" }, { reason: "reconnect" }]);
    await flush();
    expect(settlements).toBe(1);
    expect(client.pendingRequestCount).toBe(0);
  });

  it("queues requests made while reconnecting and sends them in call order after the welcome", async () => {
    const { edge, clock, client } = setup();
    await client.connect();
    edge.lastSocket.drop(closeCodes.going_away.code);
    await flush();
    const first = client.send(directConversationId, "first");
    const second = client.send(directConversationId, "second");
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(0);
    clock.advanceBy(100);
    await expect(first).resolves.toMatchObject({ seq: 1 });
    await expect(second).resolves.toMatchObject({ seq: 2 });
    expect(parsedTexts(edge.lastSocket.sentTexts).map((frame) => (frame as { type: string }).type)).toEqual(["hello", "send", "send"]);
  });

  it("rejects an addMembers in flight at a drop with closed (its outcome is unknown), and does not resend it", async () => {
    const { edge, clock, client } = setup();
    edge.onRequest = () => "ignore";
    await client.connect();
    const added = client.addMembers(groupConversationId, ["dave"]);
    await flush();
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    expect(await rejection(added)).toMatchObject({ code: "closed", retryable: false });
    clock.advanceBy(100);
    await flush();
    expect(edge.framesOfType("addMembers")).toHaveLength(1);
  });

  it("sends a createGroup with a clientGroupId and, in flight at a drop, sends it again after the next welcome with the same one", async () => {
    const { edge, clock, client } = setup();
    let answering = false;
    edge.onRequest = (frame) => (frame.type === "createGroup" && !answering ? "ignore" : "default");
    await client.connect();
    const group = client.createGroup("team", ["bob"]);
    await flush();
    answering = true;
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    clock.advanceBy(100);
    await expect(group).resolves.toMatchObject({ conversationId: groupConversationId, title: "team" });
    const [first, again] = edge.framesOfType("createGroup");
    expect(first?.clientGroupId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(again?.clientGroupId).toBe(first?.clientGroupId);
    // A caller's own clientGroupId is sent as given.
    await client.createGroup("team", ["bob"], { clientGroupId: "my-group-1" });
    expect(edge.framesOfType("createGroup")[2]?.clientGroupId).toBe("my-group-1");
  });

  it("after a 4100-range close, asks the token provider again (reason refresh) and reconnects with the new token", async () => {
    const { edge, clock, client, tokenRequests } = setup();
    edge.onHello = (hello) => (hello.token === "token-1" ? { closeCode: closeCodes.token_expired.code } : "welcome");
    const connected = client.connect();
    await flush();
    expect(client.state).toBe("waiting_to_reconnect");
    clock.advanceBy(100);
    await expect(connected).resolves.toMatchObject({ userId: "alice" });
    expect(tokenRequests).toEqual([{ reason: "connect" }, { reason: "refresh" }]);
    expect(edge.framesOfType("hello").map((hello) => hello.token)).toEqual(["token-1", "token-2"]);
  });

  it.each([closeCodes.protocol_violation.code, closeCodes.unsupported_protocol_version.code])(
    "after a %i close (4200 range) stops: closed, pending requests reject, no reconnect",
    async (code) => {
      const { edge, clock, client, states } = setup();
      edge.onRequest = () => "ignore";
      await client.connect();
      const sent = client.send(directConversationId, "stranded");
      await flush();
      edge.lastSocket.drop(code);
      expect(await rejection(sent)).toMatchObject({ code: "closed", retryable: false });
      expect(client.state).toBe("closed");
      expect(states.at(-1)).toMatchObject({ state: "closed", closedReason: "stopped_by_server", closeCode: code });
      clock.advanceBy(60_000);
      await flush();
      expect(edge.sockets).toHaveLength(1);
    },
  );

  it("after a too_many_sessions close reconnects with backoff rather than stop: the user's gone sessions stop counting", async () => {
    const { edge, clock, client, states } = setup();
    await client.connect();
    edge.lastSocket.drop(closeCodes.too_many_sessions.code);
    await flush();
    expect(client.state).toBe("waiting_to_reconnect");
    expect(states.at(-1)).toMatchObject({ state: "waiting_to_reconnect", closeCode: closeCodes.too_many_sessions.code });
    clock.advanceBy(60_000);
    await flush();
    expect(edge.sockets).toHaveLength(2);
  });

  it("rejects connect() when the edge stops the first attempt (4201 on hello)", async () => {
    const { edge, client } = setup();
    edge.onHello = () => ({ closeCode: closeCodes.unsupported_protocol_version.code });
    const error = await rejection(client.connect());
    expect(error.code).toBe("closed");
    expect(error.message).toContain(String(closeCodes.unsupported_protocol_version.code));
  });

  it("rejects requests in flight at a 1009 close instead of sending them again", async () => {
    const { edge, clock, client } = setup();
    edge.onRequest = () => "ignore";
    await client.connect();
    const sent = client.send(directConversationId, "suspect");
    await flush();
    edge.lastSocket.drop(standardCloseCodes.messageTooBig);
    expect(await rejection(sent)).toMatchObject({ code: "invalid_field", retryable: false });
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    expect(edge.framesOfType("send")).toHaveLength(1);
  });

  it("close() closes the socket with 1000, rejects pending requests and connect() may start again", async () => {
    const { edge, client, states } = setup();
    edge.onRequest = () => "ignore";
    await client.connect();
    const sent = client.send(directConversationId, "bye");
    client.close();
    expect(await rejection(sent)).toMatchObject({ code: "closed" });
    expect(edge.lastSocket.closedByClientWithCode).toBe(standardCloseCodes.normal);
    expect(states.at(-1)).toMatchObject({ state: "closed", closedReason: "close_requested" });
    await flush();
    expect(client.state).toBe("closed");
    await client.connect();
    expect(edge.sockets).toHaveLength(2);
  });
});

describe("CellwireClient: incoming frames and heartbeat", () => {
  it("emits live messages and mailbox events, and server errors without a requestId", async () => {
    const { edge, client, errors } = setup();
    const events: unknown[] = [];
    const messages: unknown[] = [];
    client.on("event", (event) => events.push(event));
    client.on("message", (message) => messages.push(message));
    await client.connect();
    const message = edge.store(directConversationId, "cm-live", "hi alice", "bob");
    const receipt = edge.append({ kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 });
    edge.lastSocket.deliver({ type: "error", code: "malformed_frame", message: "that was not JSON", retryable: false });
    // Messages are no longer mailbox events: the mailbox holds only the receipt.
    expect(messages).toEqual([message]);
    expect(events).toEqual([receipt]);
    expect(errors).toEqual([expect.objectContaining({ code: "malformed_frame", message: "that was not JSON" })]);
  });

  it("reports an undecodable frame as an error event and keeps working", async () => {
    const { edge, client, errors } = setup();
    await client.connect();
    const badFrames: (string | Uint8Array)[] = [
      "not json",
      JSON.stringify({ surprise: "no type" }),
      JSON.stringify({ type: "ack", requestId: "r1" }),
      JSON.stringify({ type: "message", message: { body: "no ids" } }),
      JSON.stringify({ type: "event", seq: 1, event: { kind: 5 } }),
      JSON.stringify({ type: "event", seq: 0, event: { kind: "receipt" } }),
      JSON.stringify({ type: "event", seq: 1, event: { kind: "joined", conversationId: "nope" } }),
      new Uint8Array([1, 2, 3]),
    ];
    for (const frame of badFrames) expect(() => edge.lastSocket.deliver(frame)).not.toThrow();
    expect(errors.map((error) => error.code)).toEqual(Array(badFrames.length).fill("malformed_frame"));
    expect(client.state).toBe("open");
    await expect(client.send(directConversationId, "still fine")).resolves.toMatchObject({ seq: 1 });
  });

  it("rejects a request answered with the wrong reply type", async () => {
    const { edge, client } = setup();
    edge.onRequest = (frame): ServerFrame => ({ type: "pong", requestId: frame.requestId });
    await client.connect();
    expect(await rejection(client.openDirect("bob"))).toMatchObject({ code: "malformed_frame" });
  });

  it("pings every heartbeatIntervalMs and drops a connection silent for a whole interval", async () => {
    const { edge, clock, client } = setup();
    edge.heartbeatIntervalMs = 1000;
    await client.connect();
    clock.advanceBy(1000);
    await flush();
    expect(edge.framesOfType("ping")).toHaveLength(1);
    clock.advanceBy(1000);
    await flush();
    expect(edge.framesOfType("ping")).toHaveLength(2);
    expect(client.state).toBe("open");

    edge.onRequest = () => "ignore";
    clock.advanceBy(1000);
    await flush();
    expect(edge.framesOfType("ping")).toHaveLength(3);
    expect(client.state).toBe("open");
    clock.advanceBy(1000);
    expect(client.state).toBe("waiting_to_reconnect");
    expect(edge.sockets[0]?.closedByClientWithCode).toBe(standardCloseCodes.normal);
    edge.onRequest = () => "default";
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    expect(edge.sockets).toHaveLength(2);
  });

  it("sends no ping when heartbeat is off", async () => {
    const { edge, clock, client } = setup({ heartbeat: false });
    edge.heartbeatIntervalMs = 1000;
    await client.connect();
    clock.advanceBy(5000);
    await flush();
    expect(edge.framesOfType("ping")).toHaveLength(0);
  });

  it("unsubscribes a listener", async () => {
    const { edge, client } = setup();
    const received: unknown[] = [];
    const stillListening: unknown[] = [];
    const unsubscribe = client.on("message", (message) => received.push(message));
    client.on("message", (message) => stillListening.push(message));
    await client.connect();
    unsubscribe();
    const message = edge.store(directConversationId, "cm-x", "unheard", "bob");
    expect(received).toEqual([]);
    expect(stillListening).toEqual([message]);
  });
});

describe("CellwireClient: failover between edges", () => {
  const urlA = "ws://127.0.0.1:8081/ws";
  const urlB = "ws://127.0.0.1:8082/ws";

  /** Two edges in front of one cell (one mailbox, sends deduplicated by clientMessageId), one port each. */
  function setupTwoEdges(overrides: Partial<CellwireClientOptions> = {}) {
    const edgeA = new FakeEdge("alice");
    const edgeB = new FakeEdge("alice", edgeA.cell);
    edges.push(edgeA, edgeB);
    const network = fakeEdgeNetwork(
      new Map([
        [urlA, edgeA],
        [urlB, edgeB],
      ]),
    );
    return { edgeA, edgeB, ...setup({ url: [urlA, urlB], WebSocket: network, ...overrides }) };
  }

  const fromBob = (edge: FakeEdge, body: string) => edge.store(directConversationId, `cm-${body}`, body, "bob");
  const bobRead = (edge: FakeEdge, seq: number) =>
    edge.append({ kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: seq, deliveredSeq: seq });

  it("the first edge is killed: reconnects to the second at once, resumes from the positions, settles the pending send once", async () => {
    const { edgeA, edgeB, clock, client, states, errors } = setupTwoEdges();
    const emitted: string[] = [];
    client.on("message", ({ seq, body }) => emitted.push(`${seq} ${body}`));
    client.on("event", ({ seq, event }) => emitted.push(`event ${seq} ${event.kind}`));
    // Edge A stores the send in the cell, then is killed before it acks.
    edgeA.onRequest = (frame) => {
      if (frame.type !== "send") return "default";
      edgeA.store(frame.conversationId, frame.clientMessageId, frame.body);
      return "ignore";
    };
    fromBob(edgeA, "before");
    bobRead(edgeA, 1);
    await client.connect();
    expect(client.url).toBe(urlA);
    expect(states.at(-1)).toMatchObject({ state: "open", url: urlA });
    await expect(client.whenSynced()).resolves.toBe(1);

    let settlements = 0;
    const sent = client.send(directConversationId, "survive", { clientMessageId: "cm-own" }).finally(() => {
      settlements += 1;
    });
    await flush();
    expect(client.positions()).toEqual({ mailboxSeq: 1, conversations: { [directConversationId]: 2 } });
    edgeA.kill();
    expect(states.at(-1)).toMatchObject({ state: "waiting_to_reconnect", closeCode: standardCloseCodes.abnormal, url: urlB });
    // Not a backoff (100 ms here) but the failover window: at most initialDelayMs × jitterRatio = 50 ms.
    expect(states.at(-1)?.reconnectDelayMs).toBe(50);
    expect(client.url).toBe(urlB);
    fromBob(edgeA, "while-away");
    bobRead(edgeA, 3);

    clock.advanceBy(50);
    await flush();
    expect(client.state).toBe("open");
    const ack = await sent;
    expect(ack).toMatchObject({ seq: 2, messageId: "m2", clientMessageId: "cm-own" });
    expect(edgeB.sockets).toHaveLength(1);
    expect(edgeB.lastSocket.url).toBe(urlB);
    expect(edgeB.framesOfType("hello").map(({ resumeAfterSeq, conversations }) => ({ resumeAfterSeq, conversations }))).toEqual([
      { resumeAfterSeq: 1, conversations: [{ conversationId: directConversationId, afterSeq: 2 }] },
    ]);
    expect(edgeA.framesOfType("send").map((frame) => frame.clientMessageId)).toEqual(["cm-own"]);
    expect(edgeB.framesOfType("send").map((frame) => frame.clientMessageId)).toEqual(["cm-own"]);
    expect(edgeB.storedMessages(directConversationId)).toHaveLength(3);
    expect(client.url).toBe(urlB);
    expect(states.at(-1)).toMatchObject({ state: "open", url: urlB });
    await expect(client.whenSynced()).resolves.toBe(2);
    fromBob(edgeB, "live-on-b");
    await flush();
    expect(settlements).toBe(1);
    expect(client.pendingRequestCount).toBe(0);
    // The session started live at the heads (mailbox 1, the conversation at its first live message, 2):
    // each later event and message once, none lost across the failover.
    expect(emitted).toEqual(["2 survive", "3 while-away", "event 2 receipt", "4 live-on-b"]);
    expect(errors).toEqual([]);
  });

  it("all edges down: the URLs rotate while the backoff grows; the first edge back is used", async () => {
    const { edgeA, edgeB, clock, client, states } = setupTwoEdges();
    edgeA.down = true;
    edgeB.down = true;
    const connected = client.connect();
    for (let attempt = 0; attempt < 5; attempt++) {
      await flush();
      clock.advanceBy(clock.nextDueInMs() ?? 0);
    }
    await flush();
    const attempts = states.filter((change) => change.state === "connecting").map((change) => change.url);
    expect(attempts).toEqual([urlA, urlB, urlA, urlB, urlA, urlB]);
    const waits = states.filter((change) => change.state === "waiting_to_reconnect");
    // Each wait names the URL of the attempt it leads to.
    expect(waits.map((change) => change.reconnectDelayMs)).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(waits.map((change) => change.url)).toEqual([urlB, urlA, urlB, urlA, urlB, urlA]);
    expect(edgeA.sockets.map((socket) => socket.url)).toEqual([urlA, urlA, urlA]);
    expect(edgeB.sockets.map((socket) => socket.url)).toEqual([urlB, urlB, urlB]);
    expect(client.state).toBe("waiting_to_reconnect");

    edgeA.down = false;
    clock.advanceBy(clock.nextDueInMs() ?? 0);
    await flush();
    expect(client.state).toBe("open");
    await expect(connected).resolves.toMatchObject({ userId: "alice" });
    expect(client.url).toBe(urlA);
  });

  it("a refused first URL moves on after the usual backoff, not the failover window", async () => {
    const { edgeA, edgeB, clock, client, states } = setupTwoEdges();
    edgeA.down = true;
    const connected = client.connect();
    await flush();
    expect(states.at(-1)).toMatchObject({
      state: "waiting_to_reconnect",
      closeCode: standardCloseCodes.abnormal,
      reconnectDelayMs: 100,
      url: urlB,
    });
    clock.advanceBy(99);
    await flush();
    expect(edgeB.sockets).toHaveLength(0);
    clock.advanceBy(1);
    await flush();
    expect(client.state).toBe("open");
    await expect(connected).resolves.toMatchObject({ userId: "alice" });
    expect(edgeB.sockets).toHaveLength(1);
  });

  it("a fresh token is asked for on the same edge: a 4100-range close does not move to another URL", async () => {
    const { edgeA, edgeB, clock, client, tokenRequests } = setupTwoEdges();
    await client.connect();
    edgeA.lastSocket.drop(closeCodes.token_expired.code);
    expect(client.url).toBe(urlA);
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    expect(edgeA.sockets).toHaveLength(2);
    expect(edgeB.sockets).toHaveLength(0);
    expect(tokenRequests.map((request) => request.reason)).toEqual(["connect", "refresh"]);
  });

  it("one URL (a string) keeps its behaviour: the same URL again, after the usual backoff", async () => {
    const { edge, clock, client, states } = setup();
    await client.connect();
    expect(client.url).toBe("ws://edge.test/ws");
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    expect(states.at(-1)).toMatchObject({ state: "waiting_to_reconnect", reconnectDelayMs: 100, url: "ws://edge.test/ws" });
    clock.advanceBy(99);
    await flush();
    expect(edge.sockets).toHaveLength(1);
    clock.advanceBy(1);
    await flush();
    expect(client.state).toBe("open");
    expect(edge.sockets.map((socket) => socket.url)).toEqual(["ws://edge.test/ws", "ws://edge.test/ws"]);
  });
});
