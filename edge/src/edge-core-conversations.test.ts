// Conversation logs as a session reads them (docs/decisions/0009), in process: hello cursors and joined
// events read before `synced`, live messages of conversations with and without a cursor, gaps, members
// no more, logs that cannot be read, the bound on cursors per session, the bounds on reads in flight, and
// the catch-ups after a change of a cell's workers or a NATS reconnect. Conversation logs are modelled by
// FakeConversationLogs (edge/test/edge-fakes.ts), which answers cell.messagesAfter as a cell does.
import { afterEach, describe, expect, it, vi } from "vitest";
import { RemoteError, UnavailableError } from "@cellwire/cluster";
import { closeCodes, errorCodes, type CellRequest, type JoinedEvent, type SequencedEvent } from "@cellwire/protocol";
import { fakeEdge, framesOfType, logMessage, type FakeEdge, type FakeTransport } from "../test/edge-fakes.ts";

const first = "g-AAAAAAAAAAAAAAAAAAAAAA";
const second = "g-BBBBBBBBBBBBBBBBBBBBBB";
const third = "g-CCCCCCCCCCCCCCCCCCCCCC";

const edges: FakeEdge[] = [];

function newEdge(...args: Parameters<typeof fakeEdge>): FakeEdge {
  const edge = fakeEdge(...args);
  edges.push(edge);
  return edge;
}

afterEach(() => {
  // Nothing written after a close, nothing closed twice, every frame a valid server frame.
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

/** Lets every pending promise chain of the fakes run (they settle within one turn of the event loop). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The seqs of the message frames of one conversation, in the order written. */
function messageSeqs(transport: FakeTransport, conversationId: string): number[] {
  return framesOfType(transport, "message")
    .map((frame) => frame["message"] as { conversationId: string; seq: number })
    .filter((message) => message.conversationId === conversationId)
    .map((message) => message.seq);
}

/** Where each read of a conversation's log started (null: at the member's join point), in order. */
function readsOf(edge: FakeEdge, conversationId: string): (number | null)[] {
  return edge.router
    .requestsOf("cell.messagesAfter")
    .filter(
      (request): request is Extract<CellRequest, { type: "cell.messagesAfter" }> =>
        request.type === "cell.messagesAfter" && request.conversationId === conversationId,
    )
    .map((request) => request.afterSeq);
}

function indexOfFrame(transport: FakeTransport, matches: (frame: Record<string, unknown>) => boolean): number {
  return transport.frames.findIndex(matches);
}

function isMessageOf(conversationId: string, seq: number): (frame: Record<string, unknown>) => boolean {
  return (frame) => {
    if (frame["type"] !== "message") return false;
    const message = frame["message"] as { conversationId: string; seq: number };
    return message.conversationId === conversationId && message.seq === seq;
  };
}

function joined(conversationId: string, afterSeq: number): JoinedEvent {
  return { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq, addedByUserId: "alice" };
}

/** The user's mailbox holds `events` (seqs 1..n): pages are served from them as the cell does. */
function mailboxOf(edge: FakeEdge, events: readonly SequencedEvent[]): void {
  edge.router.answers.set("cell.mailboxPage", async (_cellId, request) => {
    if (request.type !== "cell.mailboxPage") throw new Error("routed wrongly");
    const after = events.filter((event) => event.seq > request.afterSeq).slice(0, request.limit);
    return { type: "cell.mailboxEvents", userId: request.userId, events: after, headSeq: events.length, floorSeq: 0 };
  });
}

describe("the backlog before synced", () => {
  it("reads each conversation the hello lists after its cursor, in pages, before synced, and nothing at or before the cursor", async () => {
    const edge = newEdge();
    // 448 messages after the cursor: three pages of at most conversationPageLimitMax (200).
    edge.logs.create(first, { bob: 0 }, { head: 450 });
    edge.logs.create(second, { bob: 0 }, { head: 3 });
    const { transport } = await edge.authenticated("bob", {
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: first, afterSeq: 2 },
        { conversationId: second, afterSeq: 3 },
      ],
    });
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 0 });
    expect(messageSeqs(transport, first)).toEqual(Array.from({ length: 448 }, (_, index) => index + 3));
    expect(messageSeqs(transport, second)).toEqual([]);
    expect(readsOf(edge, first)).toEqual([2, 202, 402]);
    expect(readsOf(edge, second)).toEqual([3]);
    expect(indexOfFrame(transport, (frame) => frame["type"] === "synced")).toBe(transport.frames.length - 1);
  });

  it("writes a live message that arrives while its conversation is read once, after the backlog, and before synced", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 2 });
    const release = edge.logs.hold(first);
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    await edge.logs.readsWaiting(1);
    // Committed while the read waits: published live, and in the page too.
    const [third, fourth] = edge.logs.append(first, 2);
    if (third === undefined || fourth === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", third);
    edge.deliveries.publishMessage("bob", fourth);
    expect(messageSeqs(transport, first)).toEqual([]);
    release();
    await transport.frame((frame) => frame["type"] === "synced");
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3, 4]);
    expect(indexOfFrame(transport, isMessageOf(first, 4))).toBeLessThan(indexOfFrame(transport, (frame) => frame["type"] === "synced"));
  });

  it("reads a conversation named by a joined event of the mailbox backlog from the event's join point, before synced", async () => {
    const edge = newEdge();
    edge.logs.create(first, { alice: 0 }, { head: 4 });
    const joinSeq = edge.logs.join(first, "bob");
    edge.logs.append(first, 3);
    mailboxOf(edge, [{ seq: 1, event: joined(first, joinSeq) }]);
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0 });
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 1 });
    expect(readsOf(edge, first)).toEqual([4]);
    expect(messageSeqs(transport, first)).toEqual([5, 6, 7]);
    const eventIndex = indexOfFrame(transport, (frame) => frame["type"] === "event" && frame["seq"] === 1);
    expect(eventIndex).toBeGreaterThan(0);
    expect(eventIndex).toBeLessThan(indexOfFrame(transport, isMessageOf(first, 5)));
  });

  it("does not read again a conversation the hello lists when the backlog's joined event names it too", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 3 });
    mailboxOf(edge, [{ seq: 1, event: joined(first, 0) }]);
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 2 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    // The device's own cursor (2) wins over the join point (0): it already holds 1 and 2.
    expect(readsOf(edge, first)).toEqual([2]);
    expect(messageSeqs(transport, first)).toEqual([3]);
  });
});

describe("live messages", () => {
  it("starts reading a conversation when a live joined event names it, and writes each message once", async () => {
    const edge = newEdge();
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0 });
    await transport.frame((frame) => frame["type"] === "synced");
    edge.logs.create(first, { alice: 0 }, { head: 3 });
    const joinSeq = edge.logs.join(first, "bob");
    const [fourth, fifth] = edge.logs.append(first, 2);
    if (fourth === undefined || fifth === undefined) throw new Error("append returned too few");
    const release = edge.logs.hold(first);
    edge.deliveries.publish("bob", 1, joined(first, joinSeq));
    await edge.logs.readsWaiting(1);
    // 4 arrives live while the log is read, 5 only in the page (its delivery was lost).
    edge.deliveries.publishMessage("bob", fourth);
    release();
    await transport.frame(isMessageOf(first, 5));
    expect(readsOf(edge, first)).toEqual([3]);
    expect(messageSeqs(transport, first)).toEqual([4, 5]);
    expect(indexOfFrame(transport, (frame) => frame["type"] === "event" && frame["seq"] === 1)).toBeLessThan(
      indexOfFrame(transport, isMessageOf(first, 4)),
    );
  });

  it("in a resumed session, reads a conversation it has no cursor for from the member's join point, then writes the live message", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 2 }, { head: 4 });
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0 });
    await transport.frame((frame) => frame["type"] === "synced");
    const [fifth] = edge.logs.append(first);
    if (fifth === undefined) throw new Error("append returned nothing");
    edge.deliveries.publishMessage("bob", fifth);
    await transport.frame(isMessageOf(first, 5));
    expect(readsOf(edge, first)).toEqual([null]);
    expect(messageSeqs(transport, first)).toEqual([3, 4, 5]);
  });

  it("in a live session, writes the first live message of a conversation at once and reads nothing", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 2 }, { head: 4 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const [fifth, sixth] = edge.logs.append(first, 2);
    if (fifth === undefined || sixth === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", fifth);
    expect(messageSeqs(transport, first)).toEqual([5]);
    edge.deliveries.publishMessage("bob", sixth);
    edge.deliveries.publishMessage("bob", fifth);
    expect(messageSeqs(transport, first)).toEqual([5, 6]);
    await settle();
    expect(readsOf(edge, first)).toEqual([]);
  });

  it("reads the log from the cursor when a live message shows a gap, and writes no message twice or out of order", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const appended = edge.logs.append(first, 5);
    const live = (seq: number): void => {
      const message = appended[seq - 1];
      if (message === undefined) throw new Error(`no message ${seq}`);
      edge.deliveries.publishMessage("bob", message);
    };
    live(1);
    const release = edge.logs.hold(first);
    // 2 and 3 were lost: 4 shows the gap.
    live(4);
    await edge.logs.readsWaiting(1);
    live(5);
    live(3);
    expect(messageSeqs(transport, first)).toEqual([1]);
    release();
    await transport.frame(isMessageOf(first, 5));
    // Late and repeated deliveries of what the device holds change nothing.
    live(2);
    live(3);
    live(5);
    const [sixth] = edge.logs.append(first);
    if (sixth === undefined) throw new Error("append returned nothing");
    edge.deliveries.publishMessage("bob", sixth);
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(readsOf(edge, first)).toEqual([1]);
  });

  it("writes the live messages held during a read after the page, when the page was read before they were committed", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const [one, , three] = edge.logs.append(first, 3);
    if (one === undefined || three === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", one);
    const release = edge.logs.holdReplies(first);
    // 2 was lost: 3 shows the gap; the cell reads the page (2, 3) at once and its reply is slow.
    const pagesBefore = edge.logs.pagesRead;
    edge.deliveries.publishMessage("bob", three);
    await edge.logs.pagesReadReach(pagesBefore + 1);
    const [four, five] = edge.logs.append(first, 2);
    if (four === undefined || five === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", four);
    edge.deliveries.publishMessage("bob", five);
    release();
    await transport.frame(isMessageOf(first, 5));
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3, 4, 5]);
    // 4 and 5 came from the held live messages: one read was enough.
    expect(readsOf(edge, first)).toEqual([1]);
  });

  it("holds live messages during a read only up to heldBytesPerSessionMax; past it they are read from the log, each written once and in order", async () => {
    const frameLength = JSON.stringify({ type: "message", message: logMessage(first, 4) }).length;
    // Room for two held messages of this size (3, which showed the gap, and 4), not three.
    const edge = newEdge({ heldBytesPerSessionMax: 2 * frameLength + 10 });
    edge.logs.create(first, { bob: 0 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const [one, , three] = edge.logs.append(first, 3);
    if (one === undefined || three === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", one);
    const release = edge.logs.holdReplies(first);
    const pagesBefore = edge.logs.pagesRead;
    edge.deliveries.publishMessage("bob", three);
    await edge.logs.pagesReadReach(pagesBefore + 1);
    const [four, five] = edge.logs.append(first, 2);
    if (four === undefined || five === undefined) throw new Error("append returned too few");
    edge.deliveries.publishMessage("bob", four);
    edge.deliveries.publishMessage("bob", five);
    release();
    await transport.frame(isMessageOf(first, 5));
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3, 4, 5]);
    // 3 and 4 were held; 5 passed the byte budget and was read from the log after 4 (without the budget,
    // as in the test above, one read is enough: [1]).
    expect(readsOf(edge, first)).toEqual([1, 4]);
  });

  it("in a resumed session, reads a conversation first seen live during the backlog once the backlog is written", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 1 });
    edge.logs.create(second, { bob: 1 }, { head: 2 });
    const release = edge.logs.hold(first);
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    await edge.logs.readsWaiting(1);
    const [third] = edge.logs.append(second);
    if (third === undefined) throw new Error("append returned nothing");
    edge.deliveries.publishMessage("bob", third);
    await settle();
    // Held by its cursor: the backlog (the hello's conversations) comes first.
    expect(readsOf(edge, second)).toEqual([]);
    release();
    await transport.frame(isMessageOf(second, 3));
    expect(readsOf(edge, second)).toEqual([null]);
    expect(messageSeqs(transport, second)).toEqual([2, 3]);
    expect(messageSeqs(transport, first)).toEqual([1]);
    expect(indexOfFrame(transport, (frame) => frame["type"] === "synced")).toBeLessThan(indexOfFrame(transport, isMessageOf(second, 2)));
  });

  it("writes nothing of a live message to a session that closed", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const written = transport.texts.length;
    transport.peerClose();
    const [message] = edge.logs.append(first);
    if (message === undefined) throw new Error("append returned nothing");
    edge.deliveries.publishMessage("bob", message);
    await settle();
    expect(transport.texts).toHaveLength(written);
  });
});

describe("conversations that cannot be read", () => {
  it("forgets a conversation the user is not a member of (or that does not exist) and keeps the session", async () => {
    const edge = newEdge();
    // bob left `first` (or never was in it); `third` was never placed in the directory.
    edge.logs.create(first, { alice: 0 }, { head: 2 });
    edge.logs.create(second, { bob: 0 }, { head: 1 });
    const { transport } = await edge.authenticated("bob", {
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: first, afterSeq: 0 },
        { conversationId: second, afterSeq: 0 },
        { conversationId: third, afterSeq: 0 },
      ],
    });
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 0 });
    expect(messageSeqs(transport, second)).toEqual([1]);
    expect(framesOfType(transport, "message")).toHaveLength(1);
    expect(framesOfType(transport, "error")).toEqual([]);
    expect(transport.isOpen).toBe(true);
    // Forgotten, not kept at its old cursor: a later message of it starts again from the join point.
    edge.deliveries.publishMessage("bob", logMessage(first, 3));
    await vi.waitFor(() => expect(readsOf(edge, first)).toEqual([0, null]));
    await settle();
    expect(framesOfType(transport, "message")).toHaveLength(1);
    transport.receiveJson({ type: "ping", requestId: "still-open" });
    expect(await transport.frame((frame) => frame["requestId"] === "still-open")).toEqual({ type: "pong", requestId: "still-open" });
  });

  it("keeps the session when a listed conversation's cell does not answer: synced comes, the other conversations are read, and the conversation later", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 2, cellId: "b" });
    edge.logs.create(second, { bob: 0 }, { head: 1 });
    let cellBDown = true;
    edge.router.answers.set("cell.messagesAfter", (cellId, request) =>
      cellId === "b" && cellBDown
        ? Promise.reject(new UnavailableError("cell_unavailable", "cell b: no responders"))
        : edge.logs.answer(cellId, request),
    );
    const { transport } = await edge.authenticated("bob", {
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: first, afterSeq: 0 },
        { conversationId: second, afterSeq: 0 },
      ],
    });
    await transport.frame((frame) => frame["type"] === "synced");
    expect(messageSeqs(transport, second)).toEqual([1]);
    expect(messageSeqs(transport, first)).toEqual([]);
    expect(framesOfType(transport, "error")).toEqual([]);
    // Cell b answers again: its conversation is read by the session's own retry, with no reconnect.
    cellBDown = false;
    await transport.frame((frame) => frame["type"] === "message" && (frame["message"] as { seq?: number } | undefined)?.seq === 2);
    expect(messageSeqs(transport, first)).toEqual([1, 2]);
    expect(transport.closeCode).toBeUndefined();
  });

  it("reads a page again after the retry-after of a cell that answers overloaded, and keeps the session", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 2 });
    let refusals = 0;
    edge.router.answers.set("cell.messagesAfter", (cellId, request) => {
      if (refusals++ < 2)
        return Promise.resolve({ type: "cell.error", code: "overloaded", message: "too many requests pending", retryAfterMs: 5 });
      return edge.logs.answer(cellId, request);
    });
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    expect(messageSeqs(transport, first)).toEqual([1, 2]);
    expect(refusals).toBe(3);
    expect(framesOfType(transport, "error")).toEqual([]);
    expect(transport.closeCode).toBeUndefined();
  });

  it("after five overloaded answers in a row, keeps the session and reads the conversation again later", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 2 });
    let refusals = 0;
    edge.router.answers.set("cell.messagesAfter", (cellId, request) => {
      refusals++;
      if (refusals <= 5)
        return Promise.resolve({ type: "cell.error", code: "overloaded", message: "too many requests pending", retryAfterMs: 1 });
      return edge.logs.answer(cellId, request);
    });
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    await transport.frame((frame) => frame["type"] === "message" && (frame["message"] as { seq?: number } | undefined)?.seq === 2);
    expect(refusals).toBe(6);
    expect(messageSeqs(transport, first)).toEqual([1, 2]);
    expect(transport.closeCode).toBeUndefined();
  });

  it("fills a live gap once the conversation's cell answers again, keeping the session meanwhile", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 });
    const { transport } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    edge.logs.append(first, 3);
    edge.deliveries.publishMessage("bob", logMessage(first, 1));
    let down = true;
    edge.router.answers.set("cell.messagesAfter", (cellId, request) =>
      down ? Promise.reject(new UnavailableError("cell_unavailable", "cell a: timeout")) : edge.logs.answer(cellId, request),
    );
    edge.deliveries.publishMessage("bob", logMessage(first, 3));
    expect(messageSeqs(transport, first)).toEqual([1]);
    down = false;
    await transport.frame((frame) => frame["type"] === "message" && (frame["message"] as { seq?: number } | undefined)?.seq === 3);
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3]);
    expect(transport.closeCode).toBeUndefined();
  });

  it("still closes with 4003 when the read fails for another reason than an unanswering cell", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 2 });
    edge.router.answers.set("cell.messagesAfter", () => Promise.reject(new RemoteError("internal", "the reply does not decode")));
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    expect(await transport.closed()).toBe(closeCodes.unavailable.code);
    expect(framesOfType(transport, "synced")).toEqual([]);
  });
});

describe("bounds", () => {
  it("past conversationsPerSessionMax forgets the least recently used idle cursor, never one being read", async () => {
    const edge = newEdge({ conversationsPerSessionMax: 2 });
    for (const conversationId of [first, second, third]) edge.logs.create(conversationId, { bob: 0 });
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0 });
    await transport.frame((frame) => frame["type"] === "synced");
    const live = (conversationId: string): number => {
      const [message] = edge.logs.append(conversationId);
      if (message === undefined) throw new Error("append returned nothing");
      edge.deliveries.publishMessage("bob", message);
      return message.seq;
    };
    // `first` is being read (its read is held); it is the least recently used.
    const releaseFirst = edge.logs.hold(first);
    live(first);
    await edge.logs.readsWaiting(1);
    live(second);
    await transport.frame(isMessageOf(second, 1));
    // A third cursor: `second`, idle, goes; `first`, older but being read, stays.
    live(third);
    await transport.frame(isMessageOf(third, 1));
    releaseFirst();
    await transport.frame(isMessageOf(first, 1));
    // `first` kept its cursor: its next message is written at once, without a read.
    live(first);
    expect(messageSeqs(transport, first)).toEqual([1, 2]);
    expect(readsOf(edge, first)).toEqual([null]);
    // `second` was forgotten: its next message is read from the join point again, and the device gets
    // again what it holds (documented in EdgeLimits; the SDK drops it by seq).
    live(second);
    await transport.frame(isMessageOf(second, 2));
    expect(readsOf(edge, second)).toEqual([null, null]);
    expect(messageSeqs(transport, second)).toEqual([1, 1, 2]);
  });

  it("reads at most conversationReadsPerSessionMax logs at once per session, and conversationReadsInFlightMax across the edge", async () => {
    const edge = newEdge({ conversationReadsPerSessionMax: 2 }, { conversationReadsInFlightMax: 3 });
    const ids = (prefix: string): string[] => Array.from({ length: 5 }, (_, index) => `g-${prefix}${String(index).padStart(21, "0")}`);
    const bobs = ids("b");
    const carols = ids("c");
    for (const conversationId of bobs) edge.logs.create(conversationId, { bob: 0 }, { head: 1 });
    for (const conversationId of carols) edge.logs.create(conversationId, { carol: 0 }, { head: 1 });
    const release = edge.logs.hold();
    const bob = await edge.authenticated("bob", {
      resumeAfterSeq: 0,
      conversations: bobs.map((conversationId) => ({ conversationId, afterSeq: 0 })),
    });
    await edge.logs.readsWaiting(2);
    for (let turn = 0; turn < 5; turn++) await settle();
    expect(edge.logs.readsInFlight).toBe(2);
    const carol = await edge.authenticated("carol", {
      resumeAfterSeq: 0,
      conversations: carols.map((conversationId) => ({ conversationId, afterSeq: 0 })),
    });
    await edge.logs.readsWaiting(3);
    for (let turn = 0; turn < 5; turn++) await settle();
    expect(edge.logs.readsInFlight).toBe(3);
    expect(edge.conversationReads.active).toBe(3);
    release();
    await bob.transport.frame((frame) => frame["type"] === "synced");
    await carol.transport.frame((frame) => frame["type"] === "synced");
    for (const conversationId of bobs) expect(messageSeqs(bob.transport, conversationId)).toEqual([1]);
    for (const conversationId of carols) expect(messageSeqs(carol.transport, conversationId)).toEqual([1]);
    expect(edge.logs.readsInFlightMax).toBe(3);
    expect(edge.conversationReads.active).toBe(0);
  });
});

describe("catching up", () => {
  it("reads again only the conversations cached as homed in a cell whose workers changed", async () => {
    const edge = newEdge();
    edge.directory.userCells.set("bob", "c");
    edge.logs.create(first, { bob: 0 }, { head: 1, cellId: "a" });
    edge.logs.create(second, { bob: 0 }, { head: 1, cellId: "b" });
    const { transport } = await edge.authenticated("bob", {
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: first, afterSeq: 0 },
        { conversationId: second, afterSeq: 0 },
      ],
    });
    await transport.frame((frame) => frame["type"] === "synced");
    // Committed by workers that died before publishing: no live delivery will come.
    edge.logs.append(first);
    edge.logs.append(second);
    edge.core.cellMembershipChanged("a");
    await transport.frame(isMessageOf(first, 2));
    await settle();
    expect(readsOf(edge, first)).toEqual([0, 1]);
    expect(readsOf(edge, second)).toEqual([0]);
    expect(messageSeqs(transport, second)).toEqual([1]);
    edge.core.cellMembershipChanged("b");
    await transport.frame(isMessageOf(second, 2));
    expect(readsOf(edge, second)).toEqual([0, 1]);
    expect(messageSeqs(transport, first)).toEqual([1, 2]);
  });

  it("reads again every followed conversation after the NATS connection comes back", async () => {
    const edge = newEdge();
    edge.logs.create(first, { bob: 0 }, { head: 1, cellId: "a" });
    edge.logs.create(second, { bob: 0 }, { cellId: "b" });
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: first, afterSeq: 0 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    // A conversation followed since a live message (a live cursor, not a hello one).
    const [live] = edge.logs.append(second);
    if (live === undefined) throw new Error("append returned nothing");
    edge.deliveries.publishMessage("bob", live);
    await transport.frame(isMessageOf(second, 1));
    // Published while the connection was away: lost.
    edge.logs.append(first, 2);
    edge.logs.append(second);
    edge.core.catchUpAll();
    await transport.frame(isMessageOf(first, 3));
    await transport.frame(isMessageOf(second, 2));
    expect(messageSeqs(transport, first)).toEqual([1, 2, 3]);
    expect(messageSeqs(transport, second)).toEqual([1, 2]);
    expect(readsOf(edge, first)).toEqual([0, 1]);
    expect(readsOf(edge, second)).toEqual([null, 1]);
  });
});
