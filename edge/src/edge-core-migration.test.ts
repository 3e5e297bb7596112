// Live migration as an edge sees it, in process: conversations and mailboxes that move to another cell
// (cell.moved), keys frozen for a move (moving), and directory.changed. Fakes from edge/test/edge-fakes.ts.
import { afterEach, describe, expect, it } from "vitest";
import type { CellReply, CellRequest, Message, ReceiptEvent } from "@cellwire/protocol";
import { fakeEdge, framesOfType, homeAttemptsMaxForTests, type FakeEdge, type FakeTransport } from "../test/edge-fakes.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const edges: FakeEdge[] = [];

function newEdge(): FakeEdge {
  const edge = fakeEdge();
  edges.push(edge);
  return edge;
}

afterEach(() => {
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

function storedMessage(): Message {
  return {
    conversationId: groupId,
    messageId: "m-1",
    seq: 1,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId: "c-1",
    body: "hi",
    sentAtMs: 1,
  };
}

const receipt: ReceiptEvent = { kind: "receipt", conversationId: groupId, userId: "bob", readSeq: 1, deliveredSeq: 1 };

function movedTo(kind: "user" | "conversation", id: string, cellId: string, epoch: number): CellReply {
  return { type: "cell.moved", kind, id, cellId, epoch };
}

function reply(transport: FakeTransport, requestId: string): Promise<Record<string, unknown>> {
  return transport.frame((frame) => frame["requestId"] === requestId);
}

function cellsAsked(edge: FakeEdge, type: CellRequest["type"]): string[] {
  return edge.router.requests.filter((entry) => entry.request.type === type).map((entry) => entry.cellId);
}

/** Group `groupId` homed on "a" in the directory; cell "a" gave it to "b" at epoch 2, which stores sends. */
function edgeWithMovedGroup(): FakeEdge {
  const edge = newEdge();
  edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
  edge.router.answers.set("cell.send", async (cellId) =>
    cellId === "a" ? movedTo("conversation", groupId, "b", 2) : { type: "cell.stored", message: storedMessage(), deduplicated: false },
  );
  return edge;
}

describe("conversation requests follow a moved conversation", () => {
  it("sends at the new home after cell.moved, and goes straight there next time", async () => {
    const edge = edgeWithMovedGroup();
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "send", requestId: "s1", conversationId: groupId, clientMessageId: "c-1", body: "hi" });
    expect(await reply(transport, "s1")).toMatchObject({ type: "ack", seq: 1 });
    transport.receiveJson({ type: "send", requestId: "s2", conversationId: groupId, clientMessageId: "c-2", body: "hi" });
    expect(await reply(transport, "s2")).toMatchObject({ type: "ack" });
    expect(cellsAsked(edge, "cell.send")).toEqual(["a", "b", "b"]);
    expect(edge.cache.size).toBeGreaterThan(0);
  });

  it("waits out `moving` and answers once the move is over", async () => {
    const edge = newEdge();
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    let sends = 0;
    edge.router.answers.set("cell.history", async () => {
      sends++;
      return sends <= 3
        ? { type: "cell.error", code: "moving", message: "frozen" }
        : { type: "cell.historyPage", conversationId: groupId, messages: [], hasMore: false };
    });
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "history", requestId: "h1", conversationId: groupId });
    expect(await reply(transport, "h1")).toEqual({
      type: "historyPage",
      requestId: "h1",
      conversationId: groupId,
      messages: [],
      hasMore: false,
    });
    expect(edge.homeWaitsMs).toEqual([10, 20, 40]);
  });

  it("answers a retryable cell_unavailable when the conversation is still moving after the attempts", async () => {
    const edge = newEdge();
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    edge.router.answers.set("cell.receipt", async () => ({ type: "cell.error", code: "moving", message: "frozen" }));
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "read", requestId: "r1", conversationId: groupId, seq: 1 });
    expect(await reply(transport, "r1")).toMatchObject({ type: "error", code: "cell_unavailable", retryable: true });
    expect(cellsAsked(edge, "cell.receipt")).toHaveLength(homeAttemptsMaxForTests);
    expect(edge.logger.lines.filter((line) => line.level === "error")).toEqual([]);
  });

  it("follows a move for addMembers and for the member list typing needs", async () => {
    const edge = newEdge();
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    const summary = { conversationId: groupId, kind: "group" as const, title: "t", memberUserIds: ["alice", "bob"], lastSeq: 0 };
    edge.router.answers.set("cell.members", async (cellId) =>
      cellId === "a"
        ? movedTo("conversation", groupId, "b", 2)
        : { type: "cell.members", conversationId: groupId, memberUserIds: ["alice", "bob"] },
    );
    edge.router.answers.set("cell.addMembers", async (cellId) =>
      cellId === "a" ? movedTo("conversation", groupId, "b", 2) : { type: "cell.conversation", conversation: summary },
    );
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "typing", requestId: "t1", conversationId: groupId });
    expect(await reply(transport, "t1")).toEqual({ type: "typingAck", requestId: "t1" });
    expect(cellsAsked(edge, "cell.members")).toEqual(["a", "b"]);
    transport.receiveJson({ type: "addMembers", requestId: "m1", conversationId: groupId, userIds: ["bob"] });
    expect(await reply(transport, "m1")).toMatchObject({ type: "conversation" });
    // The move learnt by the typing lookup is cached: addMembers goes straight to "b".
    expect(cellsAsked(edge, "cell.addMembers")).toEqual(["b"]);
  });

  it("replaces a cached conversation home when directory.changed names it, and ignores an older change", async () => {
    const edge = newEdge();
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    edge.router.answers.set("cell.send", async () => ({ type: "cell.stored", message: storedMessage(), deduplicated: false }));
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "send", requestId: "s1", conversationId: groupId, clientMessageId: "c-1", body: "hi" });
    await reply(transport, "s1");
    edge.core.directoryChanged({ kind: "conversation", id: groupId, cellId: "c", epoch: 3 });
    edge.core.directoryChanged({ kind: "conversation", id: groupId, cellId: "b", epoch: 2 });
    transport.receiveJson({ type: "send", requestId: "s2", conversationId: groupId, clientMessageId: "c-2", body: "hi" });
    await reply(transport, "s2");
    expect(cellsAsked(edge, "cell.send")).toEqual(["a", "c"]);
  });
});

describe("conversation reads follow a moved conversation", () => {
  it("reads a listed conversation's log at its new home after cell.moved, and later catch-ups go to that cell", async () => {
    const edge = newEdge();
    edge.directory.userCells.set("bob", "c");
    edge.logs.create(groupId, { bob: 0 }, { head: 2, cellId: "a" });
    edge.router.answers.set("cell.messagesAfter", async (cellId, request) =>
      cellId === "a" ? movedTo("conversation", groupId, "b", 2) : edge.logs.answer(cellId, request),
    );
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: groupId, afterSeq: 0 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    expect(framesOfType(transport, "message").map((frame) => (frame["message"] as Message).seq)).toEqual([1, 2]);
    expect(cellsAsked(edge, "cell.messagesAfter")).toEqual(["a", "b"]);
    // The move is cached: a change of cell "a"'s workers no longer concerns this conversation, one of "b" does.
    edge.logs.append(groupId);
    edge.core.cellMembershipChanged("a");
    await new Promise((resolve) => setImmediate(resolve));
    expect(cellsAsked(edge, "cell.messagesAfter")).toEqual(["a", "b"]);
    edge.core.cellMembershipChanged("b");
    await transport.frame((frame) => frame["type"] === "message" && (frame["message"] as Message).seq === 3);
    expect(cellsAsked(edge, "cell.messagesAfter")).toEqual(["a", "b", "b"]);
  });

  it("waits out a conversation that is moving while its log is read", async () => {
    const edge = newEdge();
    edge.logs.create(groupId, { bob: 0 }, { head: 1 });
    let reads = 0;
    edge.router.answers.set("cell.messagesAfter", async (cellId, request) =>
      ++reads <= 2 ? { type: "cell.error", code: "moving", message: "frozen" } : edge.logs.answer(cellId, request),
    );
    const { transport } = await edge.authenticated("bob", { resumeAfterSeq: 0, conversations: [{ conversationId: groupId, afterSeq: 0 }] });
    await transport.frame((frame) => frame["type"] === "synced");
    expect(framesOfType(transport, "message").map((frame) => (frame["message"] as Message).seq)).toEqual([1]);
    expect(edge.homeWaitsMs).toEqual([10, 20]);
    expect(transport.isOpen).toBe(true);
  });
});

describe("a session follows its user's mailbox", () => {
  it("reads the mailbox from the new home after cell.moved, and the session's home follows", async () => {
    const edge = newEdge();
    edge.directory.userCells.set("bob", "a");
    edge.router.answers.set("cell.mailboxPage", async (cellId, request) =>
      cellId === "a"
        ? movedTo("user", "bob", "b", 2)
        : {
            type: "cell.mailboxEvents",
            userId: request.type === "cell.mailboxPage" ? request.userId : "?",
            events: [],
            headSeq: 4,
            floorSeq: 0,
          },
    );
    const { transport, session, welcome } = await edge.authenticated("bob");
    expect(welcome["cellId"]).toBe("a");
    expect(await transport.frame((frame) => frame["type"] === "synced")).toEqual({ type: "synced", seq: 4 });
    expect(session.homeCellId).toBe("b");
    // A change of cell "b"'s workers now concerns bob's session; one of "a" no longer does.
    const pagesBefore = cellsAsked(edge, "cell.mailboxPage").length;
    edge.core.cellMembershipChanged("a");
    // The fakes answer within one turn of the event loop: a page asked would be recorded by now.
    await new Promise((resolve) => setImmediate(resolve));
    expect(cellsAsked(edge, "cell.mailboxPage")).toHaveLength(pagesBefore);
    const framesBefore = transport.frames.length;
    edge.core.cellMembershipChanged("b");
    await transport.frame((frame) => frame["type"] === "synced", framesBefore);
    expect(cellsAsked(edge, "cell.mailboxPage").slice(pagesBefore)).toEqual(["b"]);
  });

  it("on directory.changed for the user, reads the mailbox from the new home and writes what was appended there", async () => {
    const edge = newEdge();
    edge.directory.userCells.set("bob", "a");
    let headAtB = 0;
    edge.router.answers.set("cell.mailboxPage", async (cellId, request) => {
      if (request.type !== "cell.mailboxPage") throw new Error("routed wrongly");
      if (cellId === "a") return { type: "cell.mailboxEvents", userId: "bob", events: [], headSeq: 0, floorSeq: 0 };
      const events = headAtB > request.afterSeq && request.limit > 0 ? [{ seq: 1, event: receipt }] : [];
      return { type: "cell.mailboxEvents", userId: "bob", events, headSeq: headAtB, floorSeq: 0 };
    });
    const { transport, session } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const syncedBefore = framesOfType(transport, "synced").length;
    // Event 1 was appended in "b" after the move; its live delivery was lost.
    headAtB = 1;
    edge.core.directoryChanged({ kind: "user", id: "bob", cellId: "b", epoch: 2 });
    expect(session.homeCellId).toBe("b");
    expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 1, event: receipt });
    await transport.frame((frame) => frame["type"] === "synced" && frame["seq"] === 1);
    expect(framesOfType(transport, "synced")).toHaveLength(syncedBefore + 1);
    expect(cellsAsked(edge, "cell.mailboxPage").at(-1)).toBe("b");
  });

  it("ignores directory.changed for another user, or older than the session's home", async () => {
    const edge = newEdge();
    edge.directory.userCells.set("bob", "a");
    const { transport, session } = await edge.authenticated("bob");
    await transport.frame((frame) => frame["type"] === "synced");
    const pagesBefore = cellsAsked(edge, "cell.mailboxPage").length;
    edge.core.directoryChanged({ kind: "user", id: "carol", cellId: "b", epoch: 2 });
    edge.core.directoryChanged({ kind: "user", id: "bob", cellId: "b", epoch: 1 });
    expect(session.homeCellId).toBe("a");
    expect(cellsAsked(edge, "cell.mailboxPage")).toHaveLength(pagesBefore);
  });
});
