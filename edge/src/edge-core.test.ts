// EdgeCore in process: sessions on fake sockets, a fake verifier, a RequestHandler over an in-memory
// directory and cells, and an in-memory delivery source. No timing assumption beyond waiting for events.
import { afterEach, describe, expect, it, vi } from "vitest";
import { devDirectConversationKey, directConversationId, sendTraceId, TraceIds, traceIdOf, UnavailableError } from "@cellwire/cluster";
import { closeAdvice, closeCodes, errorCodes, protocolVersion, type CellReply, type Message, type ReceiptEvent } from "@cellwire/protocol";
import { errorFrameFor } from "./error-mapping.ts";
import type { CellServedFrame } from "./request-handler.ts";
import { deferred, fakeEdge, framesOfType, requestDeadlineMsForTests, type FakeEdge } from "../test/edge-fakes.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";

const edges: FakeEdge[] = [];

function newEdge(...args: Parameters<typeof fakeEdge>): FakeEdge {
  const edge = fakeEdge(...args);
  edges.push(edge);
  return edge;
}

afterEach(() => {
  vi.useRealTimers();
  // The SessionTransport contract, checked on every socket of every test: nothing is written to a
  // socket after its close, nothing is closed twice, and every frame written is a valid server frame.
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

/** Lets every pending promise chain of the fakes run (they settle within one turn of the event loop). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function storedMessage(overrides: Partial<Message> = {}): Message {
  return {
    conversationId: groupId,
    messageId: "m-1",
    seq: 1,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId: "c-1",
    body: "hello",
    sentAtMs: 1_700_000_000_000,
    ...overrides,
  };
}

/** A mailbox event that starts nothing at the edge (a joined event would start a conversation read). */
function receipt(readSeq: number): ReceiptEvent {
  return { kind: "receipt", conversationId: groupId, userId: "alice", readSeq, deliveredSeq: readSeq };
}

function sendFrame(requestId: string, clientMessageId = requestId): Record<string, unknown> {
  return { type: "send", requestId, conversationId: groupId, clientMessageId, body: "hi" };
}

/** An edge where group `groupId` lives in cell "a" and sends are stored at once. */
function edgeWithGroup(...args: Parameters<typeof fakeEdge>): FakeEdge {
  const edge = newEdge(...args);
  edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
  edge.router.answers.set("cell.send", async (_cellId, request) => {
    if (request.type !== "cell.send") throw new Error("routed wrongly");
    return { type: "cell.stored", message: storedMessage({ clientMessageId: request.clientMessageId }), deduplicated: false };
  });
  return edge;
}

describe("authentication", () => {
  it("closes a session without hello at authTimeoutMs with 4102, not before", async () => {
    vi.useFakeTimers();
    const edge = newEdge({ authTimeoutMs: 1000 });
    const { transport } = edge.connect();
    await vi.advanceTimersByTimeAsync(999);
    expect(transport.closeCode).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(transport.closeCode).toBe(closeCodes.authentication_timeout.code);
    expect(transport.texts).toEqual([]);
    expect(edge.core.sessionCount).toBe(0);
  });

  it("keeps a welcomed session open past the authentication deadline", async () => {
    vi.useFakeTimers();
    const edge = newEdge({ authTimeoutMs: 1000 });
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await vi.advanceTimersByTimeAsync(500);
    expect(framesOfType(transport, "welcome")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5000);
    expect(transport.closeCode).toBeUndefined();
  });

  it.each([
    ["a request", JSON.stringify({ type: "ping", requestId: "r1" })],
    ["text that is not JSON", "hello?"],
    ["an invalid hello", JSON.stringify({ type: "hello", protocolVersion })],
  ])("closes with 4200 when the first frame is %s", async (_label, text) => {
    const edge = newEdge();
    const { transport } = edge.connect();
    transport.receive(text);
    expect(await transport.closed()).toBe(closeCodes.protocol_violation.code);
    expect(transport.texts).toEqual([]);
    expect(edge.verifier.tokens).toEqual([]);
  });

  it("closes with 4200 on a binary frame before authentication", async () => {
    const edge = newEdge();
    const { transport } = edge.connect();
    transport.receiveBinary();
    expect(await transport.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it("closes with 4200 on a frame sent while the hello is being verified", async () => {
    const edge = newEdge();
    const release = edge.verifier.hold();
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    transport.receiveJson({ type: "ping", requestId: "eager" });
    expect(await transport.closed()).toBe(closeCodes.protocol_violation.code);
    release();
    await settle();
    expect(transport.texts).toEqual([]);
    expect(transport.violations).toEqual([]);
    expect(edge.deliveries.targets.size).toBe(0);
  });

  it("closes with 4201 on a hello of protocol version 1 (messages in mailboxes), before looking at the token", async () => {
    const edge = newEdge();
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion: 1, token: "valid:alice" });
    expect(await transport.closed()).toBe(closeCodes.unsupported_protocol_version.code);
    expect(edge.verifier.tokens).toEqual([]);
  });

  it("closes with 4100 on a bad token and 4101 on an expired one, holding nothing for the user", async () => {
    const edge = newEdge();
    const forged = edge.connect().transport;
    forged.receiveJson({ type: "hello", protocolVersion, token: "forged" });
    expect(await forged.closed()).toBe(closeCodes.token_invalid.code);
    const expired = edge.connect().transport;
    expired.receiveJson({ type: "hello", protocolVersion, token: "expired" });
    expect(await expired.closed()).toBe(closeCodes.token_expired.code);
    expect(edge.core.sessionCount).toBe(0);
    expect(edge.deliveries.targets.size).toBe(0);
    expect(edge.directory.resolveUserCalls).toBe(0);
  });

  it("welcomes with the user, the token's device over the hello's, the home cell and the heartbeat", async () => {
    const edge = newEdge({ heartbeatIntervalMs: 12_000 });
    edge.directory.userCells.set("alice", "b");
    const { session, welcome } = await edge.authenticated("alice", { token: "valid:alice:phone", deviceId: "laptop" });
    expect(welcome).toEqual({
      type: "welcome",
      protocolVersion,
      // A random UUID, made for the welcome and not kept by the session (an idle session's bytes).
      sessionId: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
      userId: "alice",
      deviceId: "phone",
      cellId: "b",
      heartbeatIntervalMs: 12_000,
      tokenExpiresAtMs: Number.MAX_SAFE_INTEGER,
    });
    expect(session.isOpen).toBe(true);
    expect(edge.deliveries.sessionCount("alice")).toBe(1);
  });

  it("takes the device from the hello when the token names none, else calls it default", async () => {
    const edge = newEdge();
    expect((await edge.authenticated("alice", { deviceId: "laptop" })).welcome["deviceId"]).toBe("laptop");
    expect((await edge.authenticated("alice")).welcome["deviceId"]).toBe("default");
  });

  it("refuses a user's session past sessionsPerUserMax with too_many_sessions, other users unaffected", async () => {
    const edge = newEdge({ sessionsPerUserMax: 2 });
    const first = await edge.authenticated("alice");
    await edge.authenticated("alice");
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    expect(await transport.closed()).toBe(closeCodes.too_many_sessions.code);
    expect(framesOfType(transport, "welcome")).toEqual([]);
    await edge.authenticated("bob");
    // A closed session frees its place.
    first.transport.peerClose();
    await edge.authenticated("alice");
    expect(edge.deliveries.sessionCount("alice")).toBe(2);
    // Each refusal is counted (/healthz reports it).
    expect(edge.core.tooManySessionsRefusals).toBe(1);
  });

  it("at sessionsPerUserMax, closes the user's session silent for two heartbeat intervals (4004) to make room; refuses with a reconnect code while all are live", async () => {
    const edge = newEdge({ sessionsPerUserMax: 2, heartbeatIntervalMs: 25_000 });
    // Gone: its socket's close never reached the edge (a dead network path during an outage).
    const gone = await edge.authenticated("alice");
    const live = await edge.authenticated("alice");
    edge.clock.advance(40_000);
    live.transport.receiveJson({ type: "ping", requestId: "p1" });
    await live.transport.frame((frame) => frame["type"] === "pong");
    edge.clock.advance(20_000);
    // 60 s silent (past 2 × 25 s) against 20 s: the silent one makes room, the live one stays.
    const returning = await edge.authenticated("alice");
    expect(await gone.transport.closed()).toBe(closeCodes.stale_session.code);
    expect(closeAdvice(closeCodes.stale_session.code)).toBe("reconnect");
    expect(live.transport.isOpen).toBe(true);
    expect(returning.transport.isOpen).toBe(true);
    expect(edge.deliveries.sessionCount("alice")).toBe(2);
    // Both live now: the next one is refused, with a code that tells the client to come back, not to stop.
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    const code = await transport.closed();
    expect(code).toBe(closeCodes.too_many_sessions.code);
    expect(closeAdvice(code)).toBe("reconnect");
    expect(live.transport.isOpen && returning.transport.isOpen).toBe(true);
  });

  it("counts the sessions that have not been welcomed: waiting for a hello or being verified, until welcomed or closed", async () => {
    const edge = newEdge();
    const waiting = edge.connect().transport;
    const verifying = edge.connect().transport;
    const refused = edge.connect().transport;
    expect(edge.core.unauthenticatedSessionCount).toBe(3);
    const release = edge.verifier.hold();
    verifying.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    refused.receiveJson({ type: "hello", protocolVersion, token: "forged" });
    await settle();
    expect(edge.core.unauthenticatedSessionCount).toBe(3);
    release();
    await verifying.frame((frame) => frame["type"] === "welcome");
    expect(await refused.closed()).toBe(closeCodes.token_invalid.code);
    // Welcomed: out of the budget; refused: gone. The one still waiting for its hello remains.
    expect(edge.core.unauthenticatedSessionCount).toBe(1);
    waiting.peerClose();
    expect(edge.core.unauthenticatedSessionCount).toBe(0);
    // A welcomed session that closes does not go back into the budget.
    verifying.peerClose();
    expect(edge.core.unauthenticatedSessionCount).toBe(0);
    expect(edge.core.sessionCount).toBe(0);
  });

  it("holds sessionsPerUserMax when several hellos of one user are verified at the same time", async () => {
    const edge = newEdge({ sessionsPerUserMax: 1 });
    const directoryAnswer = deferred<void>();
    edge.directory.resolveUserGate = directoryAnswer.promise;
    const racers = [edge.connect().transport, edge.connect().transport, edge.connect().transport];
    for (const transport of racers) transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await vi.waitFor(() => expect(edge.directory.resolveUserCalls).toBe(1));
    directoryAnswer.resolve();
    const outcomes = await Promise.all(
      racers.map((transport) =>
        transport
          .frame((frame) => frame["type"] === "welcome")
          .then(
            () => "welcome",
            async () => `closed ${await transport.closed()}`,
          ),
      ),
    );
    const refused = `closed ${closeCodes.too_many_sessions.code}`;
    expect(outcomes.sort()).toEqual([refused, refused, "welcome"]);
    expect(edge.deliveries.sessionCount("alice")).toBe(1);
  });

  it("asks the directory again while it does not answer a hello, and welcomes the hello once it does", async () => {
    const edge = newEdge();
    edge.directory.resolveUserFailure = new UnavailableError("directory_unavailable", "directory: no responders");
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await vi.waitFor(() => expect(edge.directory.resolveUserCalls).toBe(2), { timeout: 2_000 });
    edge.directory.resolveUserFailure = undefined;
    await transport.frame((frame) => frame["type"] === "synced");
    expect(framesOfType(transport, "error")).toEqual([]);
    expect(transport.closeCode).toBeUndefined();
    expect(edge.deliveries.sessionCount("alice")).toBe(1);
  });

  it("sends an error frame, then closes with 4003, when the directory fails during hello past half its deadline", async () => {
    // Half of 600 ms leaves room for one more attempt (after 125-250 ms), not for the one after it.
    const edge = newEdge({ authTimeoutMs: 600 });
    edge.directory.resolveUserFailure = new UnavailableError("directory_unavailable", "directory: no responders");
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    expect(await transport.closed()).toBe(closeCodes.unavailable.code);
    expect(edge.directory.resolveUserCalls).toBe(2);
    expect(transport.frames).toEqual([
      { type: "error", code: "directory_unavailable", message: errorCodes.directory_unavailable.description, retryable: true },
    ]);
    expect(edge.deliveries.targets.size).toBe(0);
    expect(edge.core.sessionCount).toBe(0);
  });

  it("does not cache a directory failure: the next hello of the user asks again and is welcomed", async () => {
    const edge = newEdge({ authTimeoutMs: 600 });
    edge.directory.resolveUserFailure = new UnavailableError("directory_unavailable", "timeout");
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await transport.closed();
    expect(edge.directory.resolveUserCalls).toBe(2);
    edge.directory.resolveUserFailure = undefined;
    await edge.authenticated("alice");
    expect(edge.directory.resolveUserCalls).toBe(3);
  });

  it("closes with 4003 when the user's deliveries cannot be subscribed, and lets go of the user", async () => {
    const edge = newEdge();
    edge.deliveries.attachFailure = new Error("nats closed");
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    expect(await transport.closed()).toBe(closeCodes.unavailable.code);
    expect(framesOfType(transport, "welcome")).toEqual([]);
    expect(edge.deliveries.sessionCount("alice")).toBe(0);
  });
});

describe("requests", () => {
  it("answers malformed, unknown and invalid frames with their codes, echoing the requestId, and stays usable", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("alice");
    const from = transport.texts.length;
    transport.receive("not json");
    transport.receive("[1, 2]");
    transport.receiveJson({ type: "teleport", requestId: "r1" });
    transport.receiveJson({ type: "send", requestId: "r2", conversationId: groupId, body: "no clientMessageId" });
    transport.receiveJson({ type: "openDirect", requestId: "r3", peerUserId: "victim.>" });
    transport.receiveJson({ type: "ping", requestId: "r4" });
    await transport.frame((frame) => frame["requestId"] === "r4", from);
    const replies = transport.frames.slice(from);
    expect(replies.slice(0, 2)).toEqual([
      { type: "error", code: "malformed_frame", message: expect.any(String), retryable: false },
      { type: "error", code: "malformed_frame", message: expect.any(String), retryable: false },
    ]);
    expect(replies.find((frame) => frame["requestId"] === "r1")).toMatchObject({
      type: "error",
      code: "unknown_frame_type",
      retryable: false,
    });
    expect(replies.find((frame) => frame["requestId"] === "r2")).toMatchObject({
      type: "error",
      code: "invalid_field",
      message: expect.stringContaining("clientMessageId"),
    });
    expect(replies.find((frame) => frame["requestId"] === "r3")).toMatchObject({ type: "error", code: "invalid_field" });
    expect(replies.find((frame) => frame["requestId"] === "r4")).toEqual({ type: "pong", requestId: "r4" });
    expect(transport.isOpen).toBe(true);
    // The bad openDirect never reached a cell.
    expect(edge.router.requestsOf("cell.openDirect")).toEqual([]);
  });

  it("answers a binary frame after welcome with malformed_frame and stays usable", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("alice");
    transport.receiveBinary();
    expect(await transport.frame((frame) => frame["type"] === "error")).toMatchObject({ code: "malformed_frame" });
    transport.receiveJson({ type: "ping", requestId: "after-binary" });
    expect(await transport.frame((frame) => frame["requestId"] === "after-binary")).toEqual({ type: "pong", requestId: "after-binary" });
  });

  it("answers a second hello with already_authenticated and keeps the session", async () => {
    const edge = newEdge();
    const { transport, session } = await edge.authenticated("alice");
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:mallory" });
    expect(await transport.frame((frame) => frame["type"] === "error")).toMatchObject({ code: "already_authenticated", retryable: false });
    expect(session.userId).toBe("alice");
    expect(edge.verifier.tokens).toEqual(["valid:alice"]);
  });

  it("answers rate_limited with the requestId at requestsInFlightPerSessionMax, and accepts again once one is answered", async () => {
    const edge = edgeWithGroup({ requestsInFlightPerSessionMax: 2 });
    const pending: ((reply: CellReply) => void)[] = [];
    edge.router.answers.set("cell.send", (_cellId, request) => {
      const reply = deferred<CellReply>();
      pending.push(reply.resolve);
      return reply.promise.then((value) =>
        request.type === "cell.send" && value.type === "cell.stored"
          ? { ...value, message: { ...value.message, clientMessageId: request.clientMessageId } }
          : value,
      );
    });
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson(sendFrame("r1"));
    transport.receiveJson(sendFrame("r2"));
    transport.receiveJson(sendFrame("r3"));
    // The third is refused at once, before any cell answered.
    expect(transport.frames.find((frame) => frame["requestId"] === "r3")).toEqual({
      type: "error",
      requestId: "r3",
      code: "rate_limited",
      message: expect.stringContaining("2"),
      retryable: true,
    });
    await vi.waitFor(() => expect(pending).toHaveLength(2));
    pending[0]?.({ type: "cell.stored", message: storedMessage(), deduplicated: false });
    await transport.frame((frame) => frame["type"] === "ack" && frame["requestId"] === "r1");
    transport.receiveJson(sendFrame("r4"));
    await vi.waitFor(() => expect(pending).toHaveLength(3));
    for (const resolve of pending.slice(1)) resolve({ type: "cell.stored", message: storedMessage(), deduplicated: false });
    await transport.frame((frame) => frame["requestId"] === "r4");
    expect(
      framesOfType(transport, "ack")
        .map((frame) => frame["requestId"])
        .sort(),
    ).toEqual(["r1", "r2", "r4"]);
  });

  it("names each pipelined send's predecessor, the session's send before it to that conversation not yet known stored (docs/decisions/0020)", async () => {
    const edge = edgeWithGroup();
    const answers = new Map<string, (reply: CellReply) => void>();
    edge.router.answers.set("cell.send", (_cellId, request) => {
      const reply = deferred<CellReply>();
      if (request.type === "cell.send") answers.set(request.clientMessageId, reply.resolve);
      return reply.promise;
    });
    const stored = (clientMessageId: string): CellReply => ({
      type: "cell.stored",
      message: storedMessage({ clientMessageId }),
      deduplicated: false,
    });
    const outOfOrder: CellReply = { type: "cell.error", code: "out_of_order", message: "c0 first" };
    const namedPredecessors = () =>
      edge.router
        .requestsOf("cell.send")
        .map((request) => (request.type === "cell.send" ? `${request.clientMessageId}<${request.afterClientMessageId ?? "-"}` : "?"));
    const { transport } = await edge.authenticated("alice");
    for (const id of ["c0", "c1", "c2"]) transport.receiveJson(sendFrame(id));
    await vi.waitFor(() => expect(answers.size).toBe(3));
    expect(namedPredecessors()).toEqual(["c0<-", "c1<c0", "c2<c1"]);
    // c0 slowed down: c1 and c2 reached the cell first and were refused; they wait for c0 at the edge, and
    // since c0 then failed retryably too, they are answered out_of_order after it (not sent again).
    answers.get("c1")?.(outOfOrder);
    answers.get("c2")?.(outOfOrder);
    answers.get("c0")?.({ type: "cell.error", code: "cell_unavailable", message: "timed out" });
    await transport.frame((frame) => frame["requestId"] === "c2");
    expect(
      transport.frames.filter((frame) => frame["type"] === "error").map((frame) => [frame["requestId"], frame["code"], frame["retryable"]]),
    ).toEqual([
      ["c0", "cell_unavailable", true],
      ["c1", "out_of_order", true],
      ["c2", "out_of_order", true],
    ]);
    expect(namedPredecessors()).toHaveLength(3);
    // A new send cannot overtake the retries; the retries follow their original predecessors.
    answers.clear();
    transport.receiveJson(sendFrame("c3"));
    for (const id of ["c0", "c1", "c2"]) transport.receiveJson(sendFrame(`${id}-retry`, id));
    await vi.waitFor(() => expect(answers.size).toBe(4));
    expect(namedPredecessors().slice(3)).toEqual(["c3<c2", "c0<-", "c1<c0", "c2<c1"]);
    for (const id of ["c0", "c1", "c2", "c3"]) answers.get(id)?.(stored(id));
    await transport.frame((frame) => frame["requestId"] === "c3");
    // All acked: the next send follows nothing.
    answers.clear();
    transport.receiveJson(sendFrame("c4"));
    await vi.waitFor(() => expect(answers.size).toBe(1));
    expect(namedPredecessors().at(-1)).toBe("c4<-");
    answers.get("c4")?.(stored("c4"));
  });

  it("sends again at once a send the cell refused out_of_order once its predecessor is acked, within its deadline and with no error to the client (docs/decisions/0020)", async () => {
    const edge = edgeWithGroup();
    const answers = new Map<string, ((reply: CellReply) => void)[]>();
    edge.router.answers.set("cell.send", (_cellId, request) => {
      const reply = deferred<CellReply>();
      if (request.type === "cell.send")
        answers.set(request.clientMessageId, [...(answers.get(request.clientMessageId) ?? []), reply.resolve]);
      return reply.promise;
    });
    const stored = (clientMessageId: string, seq: number): CellReply => ({
      type: "cell.stored",
      message: storedMessage({ clientMessageId, seq }),
      deduplicated: false,
    });
    const outOfOrder: CellReply = { type: "cell.error", code: "out_of_order", message: "its predecessor first" };
    const namedPredecessors = () =>
      edge.router
        .requestsOf("cell.send")
        .map((request) => (request.type === "cell.send" ? `${request.clientMessageId}<${request.afterClientMessageId ?? "-"}` : "?"));
    const { transport } = await edge.authenticated("alice");
    for (const id of ["c0", "c1", "c2"]) transport.receiveJson(sendFrame(id));
    await vi.waitFor(() => expect(answers.size).toBe(3));
    // c0's first attempt was lost on the way (a NATS drop) and is retried: c1 and c2 overtook it.
    answers.get("c1")?.[0]?.(outOfOrder);
    answers.get("c2")?.[0]?.(outOfOrder);
    answers.get("c0")?.[0]?.(stored("c0", 1));
    await vi.waitFor(() => expect(answers.get("c1")).toHaveLength(2));
    answers.get("c1")?.[1]?.(stored("c1", 2));
    await vi.waitFor(() => expect(answers.get("c2")).toHaveLength(2));
    answers.get("c2")?.[1]?.(stored("c2", 3));
    await transport.frame((frame) => frame["requestId"] === "c2");
    expect(namedPredecessors()).toEqual(["c0<-", "c1<c0", "c2<c1", "c1<-", "c2<-"]);
    expect(framesOfType(transport, "ack").map((frame) => [frame["requestId"], frame["seq"]])).toEqual([
      ["c0", 1],
      ["c1", 2],
      ["c2", 3],
    ]);
    expect(framesOfType(transport, "error")).toEqual([]);
  });

  it("counts a failed request out of the in-flight limit too", async () => {
    const edge = edgeWithGroup({ requestsInFlightPerSessionMax: 1 });
    edge.router.answers.set("cell.send", () => Promise.reject(new UnavailableError("cell_unavailable", "cell a did not answer")));
    const { transport } = await edge.authenticated("alice");
    for (const requestId of ["r1", "r2", "r3"]) {
      transport.receiveJson(sendFrame(requestId));
      expect(await transport.frame((frame) => frame["requestId"] === requestId)).toMatchObject({
        type: "error",
        code: "cell_unavailable",
        retryable: true,
      });
    }
  });

  it("passes a cell's overloaded answer to the client with its retryAfterMs, and a plain error without one", async () => {
    const edge = edgeWithGroup();
    let retryAfterMs: number | undefined = 400;
    edge.router.answers.set("cell.send", async () =>
      retryAfterMs === undefined
        ? { type: "cell.error", code: "overloaded", message: "the send queue is full" }
        : { type: "cell.error", code: "overloaded", message: "the send queue is full", retryAfterMs },
    );
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson(sendFrame("r1"));
    expect(await transport.frame((frame) => frame["requestId"] === "r1")).toEqual({
      type: "error",
      requestId: "r1",
      code: "overloaded",
      message: "the send queue is full",
      retryable: true,
      retryAfterMs: 400,
    });
    retryAfterMs = undefined;
    transport.receiveJson(sendFrame("r2"));
    expect(await transport.frame((frame) => frame["requestId"] === "r2")).toEqual({
      type: "error",
      requestId: "r2",
      code: "overloaded",
      message: "the send queue is full",
      retryable: true,
    });
  });

  it("refuses a request past requestsInFlightMax across the edge with overloaded and its retry-after, before any work", async () => {
    const edge = edgeWithGroup({ requestsInFlightMax: 2, requestsInFlightPerSessionMax: 8, overloadedRetryAfterMs: 300 });
    const pending: (() => void)[] = [];
    edge.router.answers.set("cell.send", (_cellId, request) => {
      const answered = deferred<void>();
      pending.push(() => answered.resolve());
      const clientMessageId = request.type === "cell.send" ? request.clientMessageId : "?";
      return answered.promise.then(
        () => ({ type: "cell.stored", message: storedMessage({ clientMessageId }), deduplicated: false }) as const,
      );
    });
    // Two sessions of different users: the bound is the edge's, not a session's.
    const alice = await edge.authenticated("alice");
    const bob = await edge.authenticated("bob");
    alice.transport.receiveJson(sendFrame("a1"));
    bob.transport.receiveJson(sendFrame("b1"));
    await vi.waitFor(() => expect(pending).toHaveLength(2));
    bob.transport.receiveJson(sendFrame("b2"));
    expect(bob.transport.frames.find((frame) => frame["requestId"] === "b2")).toEqual({
      type: "error",
      requestId: "b2",
      code: "overloaded",
      message: expect.any(String),
      retryable: true,
      retryAfterMs: 300,
    });
    expect(edge.router.requestsOf("cell.send")).toHaveLength(2);
    // An answered request frees its place.
    pending[0]?.();
    await alice.transport.frame((frame) => frame["requestId"] === "a1");
    bob.transport.receiveJson(sendFrame("b3"));
    await vi.waitFor(() => expect(pending).toHaveLength(3));
    for (const answer of pending.slice(1)) answer();
    expect(await bob.transport.frame((frame) => frame["requestId"] === "b3")).toMatchObject({ type: "ack" });
  });

  it("answers an unexpected failure with internal and a generic message, logging the detail", async () => {
    const edge = edgeWithGroup();
    edge.router.answers.set("cell.send", () => Promise.reject(new Error("pg: password authentication failed for user cells")));
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson(sendFrame("r1"));
    const reply = await transport.frame((frame) => frame["requestId"] === "r1");
    expect(reply).toEqual({ type: "error", requestId: "r1", code: "internal", message: "internal error", retryable: true });
    expect(transport.texts.join("\n")).not.toContain("password");
    expect(
      edge.logger.lines
        .filter((line) => line.level === "error")
        .map((line) => line.message)
        .join("\n"),
    ).toContain("password authentication failed");
    transport.receiveJson({ type: "ping", requestId: "r2" });
    await transport.frame((frame) => frame["requestId"] === "r2");
  });

  it("forwards a live event to the session", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    edge.deliveries.publish("bob", 1, receipt(1));
    expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 1, event: receipt(1) });
  });
});

it("reads the mailbox again for sessions homed in a cell whose workers changed, and writes what a lost delivery missed", async () => {
  const edge = newEdge();
  const { transport, welcome } = await edge.authenticated("bob");
  await transport.frame((frame) => frame["type"] === "synced");
  const homeCellId = String(welcome["cellId"]);
  // Event 1 was appended by a worker that died before publishing it: no live delivery will come.
  edge.router.answers.set("cell.mailboxPage", async (_cellId, request) =>
    request.type === "cell.mailboxPage" && request.afterSeq === 0 && request.limit > 0
      ? { type: "cell.mailboxEvents", userId: "bob", events: [{ seq: 1, event: receipt(1) }], headSeq: 1, floorSeq: 0 }
      : { type: "cell.mailboxEvents", userId: "bob", events: [], headSeq: 1, floorSeq: 0 },
  );
  const pagesBefore = edge.router.requestsOf("cell.mailboxPage").length;
  edge.core.cellMembershipChanged(`${homeCellId}x`);
  expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(pagesBefore);
  edge.core.cellMembershipChanged(homeCellId);
  expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 1, event: receipt(1) });
  await transport.frame((frame) => frame["type"] === "synced" && frame["seq"] === 1);
});

describe("a new device of a user the directory places for its hello (decision 0043)", () => {
  /** Lets the fakes' promise chains run until `done` holds (each step settles within one turn). */
  async function until(done: () => boolean): Promise<void> {
    for (let turn = 0; turn < 100 && !done(); turn++) await settle();
    expect(done()).toBe(true);
  }

  it("is synced at head 0 without a mailbox read, and gets the user's first event live", async () => {
    const edge = newEdge();
    edge.directory.unplacedUsers.add("bob");
    const { transport } = await edge.authenticated("bob");
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 0 });
    expect(edge.router.requestsOf("cell.mailboxPage")).toEqual([]);
    edge.deliveries.publish("bob", 1, receipt(1));
    expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 1, event: receipt(1) });
  });

  it("registers for deliveries before asking the directory, and reads the head when an event came in between", async () => {
    const edge = newEdge();
    edge.directory.unplacedUsers.add("bob");
    const directoryAnswer = deferred<void>();
    edge.directory.resolveUserGate = directoryAnswer.promise;
    // Appended (a group add naming bob) after the directory placed him and before his welcome.
    edge.router.answers.set("cell.mailboxPage", async () => ({
      type: "cell.mailboxEvents",
      userId: "bob",
      events: [],
      headSeq: 1,
      floorSeq: 0,
    }));
    const { transport } = edge.connect();
    transport.receiveJson({ type: "hello", protocolVersion, token: "valid:bob" });
    await until(() => edge.directory.resolveUserCalls === 1);
    expect(edge.deliveries.sessionCount("bob")).toBe(1);
    edge.deliveries.publish("bob", 1, receipt(1));
    directoryAnswer.resolve();
    // A new device is live at the head, which the read tells: 1, not the 0 a skipped read would have said.
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 1 });
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);
    edge.deliveries.publish("bob", 2, receipt(2));
    expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 2, event: receipt(2) });
  });

  it("skips it for a hello asking for the whole mailbox (seq 0), and reads for one resuming after a seq", async () => {
    const edge = newEdge();
    edge.directory.unplacedUsers.add("bob");
    const bob = (await edge.authenticated("bob", { resumeAfterSeq: 0 })).transport;
    expect(await bob.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 0 });
    expect(edge.router.requestsOf("cell.mailboxPage")).toEqual([]);
    // A device that holds seq 5 of what is now a new user's empty mailbox (a restored account) is told so by the read.
    edge.directory.unplacedUsers.add("carol");
    const carol = (await edge.authenticated("carol", { resumeAfterSeq: 5 })).transport;
    expect(await carol.frame((frame) => frame["type"] === "resync")).toEqual({ type: "resync", headSeq: 0 });
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);
  });

  it("reads the mailbox of a user the directory already knew, and of a hello that found the user cached", async () => {
    const edge = newEdge();
    await (await edge.authenticated("bob")).transport.frame((frame) => frame["type"] === "synced");
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);

    edge.directory.unplacedUsers.add("dave");
    await (await edge.authenticated("dave")).transport.frame((frame) => frame["type"] === "synced");
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);
    // Dave's second device: his home comes from the edge's cache, which cannot say he is new.
    await (await edge.authenticated("dave", { deviceId: "laptop" })).transport.frame((frame) => frame["type"] === "synced");
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(2);
  });

  it("lets only the hello whose own request placed the user skip the read: one that joined it in flight reads", async () => {
    const edge = newEdge();
    edge.directory.unplacedUsers.add("bob");
    const directoryAnswer = deferred<void>();
    edge.directory.resolveUserGate = directoryAnswer.promise;
    const first = edge.connect().transport;
    const second = edge.connect().transport;
    first.receiveJson({ type: "hello", protocolVersion, token: "valid:bob", deviceId: "phone" });
    second.receiveJson({ type: "hello", protocolVersion, token: "valid:bob", deviceId: "laptop" });
    await until(() => edge.deliveries.sessionCount("bob") === 2);
    directoryAnswer.resolve();
    await first.frame((frame) => frame["type"] === "synced");
    await second.frame((frame) => frame["type"] === "synced");
    expect(edge.directory.resolveUserCalls).toBe(1);
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);
  });
});

describe("resuming the mailbox (decision 0021)", () => {
  const incarnation = "0b6f4f0e-4a4e-4c1c-9f57-5a1d2f3c4b5a";
  const otherIncarnation = "7c1e9d2a-3b4f-4e5d-8a6b-9c0d1e2f3a4b";

  /**
   * Bob's mailbox in the fake cell: `head` receipts from seq 1, named `incarnation`, growing with
   * append(). A page is read when asked for and, when `gate` is given, answered once it opens, so live
   * events can arrive during the read.
   */
  function bobsMailbox(edge: FakeEdge, head: number, gate?: Promise<void>) {
    const mailbox = { head };
    edge.router.answers.set("cell.mailboxPage", async (_cellId, request) => {
      if (request.type !== "cell.mailboxPage") throw new Error("routed wrongly");
      const headSeq = mailbox.head;
      const last = Math.min(headSeq, request.afterSeq + request.limit);
      const events = Array.from({ length: Math.max(0, last - request.afterSeq) }, (_, index) => ({
        seq: request.afterSeq + index + 1,
        event: receipt(request.afterSeq + index + 1),
      }));
      if (gate !== undefined) await gate;
      return { type: "cell.mailboxEvents", userId: "bob", events, headSeq, floorSeq: 0, incarnation };
    });
    return {
      /** Appends the next event and publishes it live. */
      append: () => {
        mailbox.head += 1;
        edge.deliveries.publish("bob", mailbox.head, receipt(mailbox.head));
      },
    };
  }

  /** The mailbox frames a session received, after the welcome. */
  function mailboxFrames(transport: FakeEdge["transports"][number]): Record<string, unknown>[] {
    return transport.frames.filter((frame) => frame["type"] === "event" || frame["type"] === "synced" || frame["type"] === "resync");
  }

  it("answers a resume beyond the head with resync at the head, and sends the live events up to the device's old seq", async () => {
    const edge = newEdge();
    const gate = deferred<void>();
    const mailbox = bobsMailbox(edge, 3, gate.promise);
    // The device holds seq 8 of a mailbox now at 3 (a restored database): 4..8 are appended again.
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 8, mailboxIncarnation: incarnation });
    // Seq 4 arrives live while the backlog is read (the page asked for, not answered yet): at or below the
    // device's claim, yet the device never held it.
    for (let turn = 0; turn < 100 && edge.router.requestsOf("cell.mailboxPage").length === 0; turn++) await settle();
    expect(edge.router.requestsOf("cell.mailboxPage")).toHaveLength(1);
    mailbox.append();
    await settle();
    gate.resolve();
    await transport.frame((frame) => frame["type"] === "synced");
    mailbox.append();
    await transport.frame((frame) => frame["type"] === "event" && frame["seq"] === 5);
    expect(mailboxFrames(transport)).toEqual([
      { type: "resync", headSeq: 3, mailboxIncarnation: incarnation },
      { type: "event", seq: 4, event: receipt(4) },
      { type: "synced", seq: 4, mailboxIncarnation: incarnation },
      { type: "event", seq: 5, event: receipt(5) },
    ]);
  });

  it("answers a hello naming another mailbox's incarnation with resync at the floor, then replays this one", async () => {
    const edge = newEdge();
    bobsMailbox(edge, 2);
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 1, mailboxIncarnation: otherIncarnation });
    await transport.frame((frame) => frame["type"] === "synced");
    expect(mailboxFrames(transport)).toEqual([
      { type: "resync", headSeq: 0, mailboxIncarnation: incarnation },
      { type: "event", seq: 1, event: receipt(1) },
      { type: "event", seq: 2, event: receipt(2) },
      { type: "synced", seq: 2, mailboxIncarnation: incarnation },
    ]);
  });

  it("resumes in the same incarnation, or without one (an older SDK), as before, and names it on synced", async () => {
    const edge = newEdge();
    bobsMailbox(edge, 3);
    const same = await edge.authenticated("bob", { resumeAfterSeq: 2, mailboxIncarnation: incarnation });
    await same.transport.frame((frame) => frame["type"] === "synced");
    expect(mailboxFrames(same.transport)).toEqual([
      { type: "event", seq: 3, event: receipt(3) },
      { type: "synced", seq: 3, mailboxIncarnation: incarnation },
    ]);
    const older = await edge.authenticated("bob", { resumeAfterSeq: 3 });
    await older.transport.frame((frame) => frame["type"] === "synced");
    expect(mailboxFrames(older.transport)).toEqual([{ type: "synced", seq: 3, mailboxIncarnation: incarnation }]);
  });
});

it("reads every session's mailbox again after the NATS connection comes back", async () => {
  const edge = newEdge();
  const bob = await edge.authenticated("bob");
  const carol = await edge.authenticated("carol");
  await bob.transport.frame((frame) => frame["type"] === "synced");
  await carol.transport.frame((frame) => frame["type"] === "synced");
  const pagesBefore = edge.router.requestsOf("cell.mailboxPage").length;
  const [bobFrames, carolFrames] = [bob.transport.frames.length, carol.transport.frames.length];
  edge.core.catchUpAll();
  await bob.transport.frame((frame) => frame["type"] === "synced", bobFrames);
  await carol.transport.frame((frame) => frame["type"] === "synced", carolFrames);
  expect(edge.router.requestsOf("cell.mailboxPage").length).toBe(pagesBefore + 2);
});

describe("slow consumers", () => {
  it("closes with 4001 when the socket reports a dropped frame", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("alice");
    await transport.frame((frame) => frame["type"] === "synced");
    transport.sendOutcome = "dropped";
    transport.receiveJson({ type: "ping", requestId: "r1" });
    expect(await transport.closed()).toBe(closeCodes.slow_consumer.code);
    expect(edge.deliveries.sessionCount("alice")).toBe(0);
  });

  it("closes with 4001 when the socket's buffer passes sendBufferBytesMax", async () => {
    const edge = newEdge({ sendBufferBytesMax: 16 * 1024 });
    const { transport } = await edge.authenticated("alice");
    await transport.frame((frame) => frame["type"] === "synced");
    transport.sendOutcome = "backpressure";
    transport.buffered = 16 * 1024;
    edge.deliveries.publish("alice", 1, receipt(1));
    expect(transport.isOpen).toBe(true);
    transport.buffered = 16 * 1024 + 1;
    edge.deliveries.publish("alice", 2, receipt(2));
    expect(await transport.closed()).toBe(closeCodes.slow_consumer.code);
    expect(framesOfType(transport, "event").map((frame) => frame["seq"])).toEqual([1, 2]);
  });
});

describe("closing", () => {
  it("closes every session with 4000 on closeAll and refuses new ones", async () => {
    const edge = newEdge();
    const waiting = edge.connect().transport;
    const { transport: open } = await edge.authenticated("alice");
    const release = edge.verifier.hold();
    const verifying = edge.connect().transport;
    verifying.receiveJson({ type: "hello", protocolVersion, token: "valid:bob" });
    edge.core.closeAll();
    for (const transport of [waiting, open, verifying]) expect(transport.closeCode).toBe(closeCodes.going_away.code);
    expect(edge.core.sessionCount).toBe(0);
    expect(edge.deliveries.targets.size).toBe(0);
    release();
    const late = edge.connect();
    expect(late.session).toBeUndefined();
    expect(late.transport.closeCode).toBe(closeCodes.going_away.code);
    // The hello that was being verified got no welcome once its verification finished.
    await settle();
    expect(verifying.texts).toEqual([]);
    expect(verifying.violations).toEqual([]);
    expect(edge.deliveries.targets.size).toBe(0);
  });

  it("refuses a session past sessionsMax with 4000", async () => {
    const edge = newEdge({ sessionsMax: 2 });
    edge.connect();
    edge.connect();
    const third = edge.connect();
    expect(third.session).toBeUndefined();
    expect(third.transport.closeCode).toBe(closeCodes.going_away.code);
    expect(edge.core.sessionCount).toBe(2);
  });

  it("writes no reply to a socket that closed while its request was in flight", async () => {
    const edge = edgeWithGroup();
    const reply = deferred<CellReply>();
    edge.router.answers.set("cell.send", () => reply.promise);
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson(sendFrame("r1"));
    await vi.waitFor(() => expect(edge.router.requestsOf("cell.send")).toHaveLength(1));
    const written = transport.texts.length;
    transport.peerClose();
    reply.resolve({ type: "cell.stored", message: storedMessage(), deduplicated: false });
    await settle();
    expect(transport.texts).toHaveLength(written);
    expect(transport.violations).toEqual([]);
    expect(edge.deliveries.sessionCount("alice")).toBe(0);
  });

  it("writes nothing and holds nothing when the socket closes during verification, directory lookup or subscription", async () => {
    const edge = newEdge();
    // During verification.
    const release = edge.verifier.hold();
    const verifying = edge.connect().transport;
    verifying.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    verifying.peerClose();
    release();
    // During the directory lookup.
    const directoryAnswer = deferred<void>();
    edge.directory.resolveUserGate = directoryAnswer.promise;
    const resolving = edge.connect().transport;
    resolving.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await vi.waitFor(() => expect(edge.directory.resolveUserCalls).toBe(1));
    resolving.peerClose();
    directoryAnswer.resolve();
    edge.directory.resolveUserGate = undefined;
    // During the subscription.
    const subscribed = deferred<void>();
    edge.deliveries.attachGate = subscribed.promise;
    const subscribing = edge.connect().transport;
    subscribing.receiveJson({ type: "hello", protocolVersion, token: "valid:carol" });
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("carol")).toBe(1));
    subscribing.peerClose();
    subscribed.resolve();
    await settle();
    for (const transport of [verifying, resolving, subscribing]) expect(transport.violations).toEqual([]);
    expect(verifying.texts).toEqual([]);
    expect(resolving.texts).toEqual([]);
    expect(subscribing.texts).toEqual([]);
    expect(edge.deliveries.targets.size).toBe(0);
    expect(edge.core.sessionCount).toBe(0);
  });

  it("forwards no live event to a closed session", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("alice");
    await transport.frame((frame) => frame["type"] === "synced");
    const written = transport.texts.length;
    transport.peerClose();
    edge.deliveries.publish("alice", 1, receipt(1));
    edge.deliveries.publishMessage("alice", storedMessage());
    expect(transport.texts).toHaveLength(written);
    expect(transport.violations).toEqual([]);
  });
});

describe("RequestHandler", () => {
  const context = { userId: "alice", deviceId: "phone", homeCellId: "a" } as const;

  it("refuses a direct conversation with oneself without asking a cell", async () => {
    const edge = newEdge();
    expect(await edge.handler.handle(context, { type: "openDirect", requestId: "r1", peerUserId: "alice" })).toMatchObject({
      type: "error",
      requestId: "r1",
      code: "invalid_peer",
    });
    expect(edge.router.requests).toEqual([]);
    expect(edge.directory.conversations.size).toBe(0);
  });

  it("opens a direct conversation on the opener's home cell under the pair's id", async () => {
    const edge = newEdge();
    const conversationId = directConversationId(devDirectConversationKey, "alice", "bob");
    edge.router.answers.set("cell.openDirect", async () => ({
      type: "cell.conversation",
      conversation: { conversationId, kind: "direct", title: null, memberUserIds: ["alice", "bob"], lastSeq: 0 },
    }));
    const reply = await edge.handler.handle({ ...context, homeCellId: "b" }, { type: "openDirect", requestId: "r1", peerUserId: "bob" });
    expect(reply).toMatchObject({ type: "conversation", requestId: "r1", conversation: { conversationId } });
    expect(edge.router.requests).toEqual([
      {
        cellId: "b",
        request: { type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId },
        deadlineAtMs: 1000 + requestDeadlineMsForTests,
      },
    ]);
  });

  it("answers not_a_member for a conversation the directory does not know, without asking a cell", async () => {
    const edge = newEdge();
    const frames: CellServedFrame[] = [
      { type: "send", requestId: "r1", conversationId: groupId, clientMessageId: "c1", body: "hi" },
      { type: "history", requestId: "r2", conversationId: groupId },
      { type: "addMembers", requestId: "r3", conversationId: groupId, userIds: ["bob"] },
    ];
    for (const frame of frames) {
      expect(await edge.handler.handle(context, frame)).toMatchObject({
        type: "error",
        requestId: frame.requestId,
        code: "not_a_member",
        retryable: false,
      });
    }
    expect(edge.router.requests).toEqual([]);
  });

  it("routes a send to the conversation's cell, under the request's one deadline, and acks the stored message", async () => {
    const edge = edgeWithGroup();
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "b", epoch: 3 });
    const reply = await edge.handler.handle(context, {
      type: "send",
      requestId: "r1",
      conversationId: groupId,
      clientMessageId: "c-1",
      body: "hi",
    });
    expect(reply).toEqual({ type: "ack", requestId: "r1", conversationId: groupId, messageId: "m-1", seq: 1, sentAtMs: 1_700_000_000_000 });
    // The deadline is made here, from the request's arrival (the fake clock reads 1,000 ms), and handed to
    // the routers, which carry what is left of it to the worker (docs/decisions/0020).
    expect(edge.router.requests).toEqual([
      {
        cellId: "b",
        request: {
          type: "cell.send",
          senderUserId: "alice",
          senderDeviceId: "phone",
          conversationId: groupId,
          clientMessageId: "c-1",
          body: "hi",
        },
        deadlineAtMs: 1000 + requestDeadlineMsForTests,
      },
    ]);
  });

  it.each([
    ["not_owner", "cell_unavailable", true, "worker a-1 does not own it"],
    ["not_found", "not_a_member", false, "The conversation does not exist or the user is not one of its members."],
    ["not_a_member", "not_a_member", false, "The conversation does not exist or the user is not one of its members."],
    ["too_many_members", "too_many_members", false, "a group has at most 1000 members"],
  ] as const)("maps a cell.error %s to the client code %s", async (cellCode, clientCode, retryable, message) => {
    const edge = edgeWithGroup();
    // A not_a_member never carries the cell's own words (issue 10).
    const cellMessage = clientCode === "not_a_member" ? `no such conversation ${groupId}` : message;
    edge.router.answers.set("cell.send", async () => ({ type: "cell.error", code: cellCode, message: cellMessage }));
    const reply = await edge.handler.handle(context, {
      type: "send",
      requestId: "r1",
      conversationId: groupId,
      clientMessageId: "c-1",
      body: "hi",
    });
    expect(reply).toEqual({ type: "error", requestId: "r1", code: clientCode, message, retryable });
  });

  it.each(["unknown_cell", "internal"] as const)(
    "throws a cell.error %s as internal, so the session logs its detail and answers internal error",
    async (cellCode) => {
      const edge = edgeWithGroup();
      edge.router.answers.set("cell.send", async () => ({ type: "cell.error", code: cellCode, message: "secret cell detail" }));
      const failure = await edge.handler
        .handle(context, { type: "send", requestId: "r1", conversationId: groupId, clientMessageId: "c-1", body: "hi" })
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      // The session's error handler (errorFrameFor) logs it (docs/decisions/0037) and hides it from the client.
      const logged: string[] = [];
      expect(errorFrameFor(failure, "r1", (line) => logged.push(line))).toEqual({
        type: "error",
        requestId: "r1",
        code: "internal",
        message: "internal error",
        retryable: true,
      });
      expect(logged).toEqual([`RemoteError: the cell answered ${cellCode}: secret cell detail`]);
    },
  );
});

describe("trace ids with tracing off (docs/decisions/0037)", () => {
  it("gives each request a cell serves but a send its own traceparent, derives a send's from the send, and names each in the edge's line about its failure", async () => {
    const prefix = (size: number): Uint8Array => new Uint8Array(size).fill(0xab);
    const edge = edgeWithGroup({}, { traceIds: new TraceIds(prefix) });
    const { transport } = await edge.authenticated("alice");
    edge.router.answers.set("cell.send", async () => ({ type: "cell.error", code: "internal", message: "disk on fire" }));
    const from = transport.frames.length;
    transport.receiveJson({ type: "send", requestId: "r1", conversationId: groupId, clientMessageId: "c-1", body: "hi" });
    transport.receiveJson({ type: "history", requestId: "r2", conversationId: groupId });
    await transport.frame((frame) => frame["requestId"] === "r1", from);
    await transport.frame((frame) => frame["requestId"] === "r2", from);
    const sent = edge.router.requests.flatMap(({ request }, index) =>
      request.type === "cell.send" || request.type === "cell.history" ? [{ request, traceparent: edge.router.traceparents[index] }] : [],
    );
    const send = sent.find(({ request }) => request.type === "cell.send");
    const historyTraceparent = sent.find(({ request }) => request.type === "cell.history")?.traceparent;
    // A send carries nothing: its worker and the recipient edges derive the same id from the send (0037).
    expect(send?.traceparent).toBeUndefined();
    expect(historyTraceparent).toMatch(/^00-abababababababab[0-9a-f]{16}-[0-9a-f]{16}-00$/);
    if (send?.request.type !== "cell.send") throw new Error("no cell.send was sent");
    const derivedTraceId = sendTraceId(send.request);
    expect(derivedTraceId).toMatch(/^[0-9a-f]{32}$/);
    const historyTraceId = traceIdOf(historyTraceparent);
    // The two lines in either order: the requests are served concurrently.
    const errors = edge.logger.lines.filter((line) => line.level === "error");
    expect(errors).toHaveLength(2);
    expect(errors).toContainEqual({
      level: "error",
      message: "RemoteError: the cell answered internal: disk on fire",
      fields: { traceId: derivedTraceId },
    });
    expect(errors).toContainEqual({
      level: "error",
      message: expect.stringContaining("FakeCellRouting has no answer for cell.history"),
      fields: { traceId: historyTraceId },
    });
  });
});
