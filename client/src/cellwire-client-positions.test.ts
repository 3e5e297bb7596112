// The device's positions in the SDK (client/BEHAVIOUR.md, "Mailbox", "Conversations" and "Positions"):
// mailbox events (joined, receipt, kinds it does not know), message frames checked per conversation, and
// what every hello resumes from; against the in-memory edge and a manual clock: no network, no sleeping.
import { closeCodes, resumeConversationsMax, standardCloseCodes, type Message } from "@cellwire/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientOptions } from "./cellwire-client.ts";
import { CellwireClientError } from "./errors.ts";
import { FakeEdge, directConversationId, flush, groupConversationId } from "../test/fake-edge.ts";
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
  const errors: CellwireClientError[] = [];
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async () => "token",
    deviceId: "laptop",
    WebSocket: edge.WebSocket,
    clock,
    random: () => 0,
    heartbeat: false,
    backoff: { initialDelayMs: 100, delayMsMax: 1000, multiplier: 2, jitterRatio: 0.5 },
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

/** Records what the client emits about positions, in one order. */
function record(client: CellwireClient): string[] {
  const log: string[] = [];
  client.on("event", ({ seq, event }) => log.push(`event ${seq} ${event.kind}`));
  client.on("joined", (joined) => log.push(`joined ${joined.conversationId.slice(0, 3)} after ${joined.afterSeq}`));
  client.on("receipt", (receipt) => log.push(`receipt ${receipt.userId} read ${receipt.readSeq}`));
  client.on("message", (message) => log.push(`message ${message.conversationId.slice(0, 3)} ${message.seq} ${message.body}`));
  client.on("synced", ({ seq }) => log.push(`synced ${seq}`));
  client.on("resync", ({ headSeq }) => log.push(`resync ${headSeq}`));
  return log;
}

/** Conversation ids that sort nowhere special: `g-` then the index in 22 digits. */
const groupId = (index: number) => `g-${String(index).padStart(22, "0")}`;
const fromBob = (edge: FakeEdge, body: string, conversationId = directConversationId) =>
  edge.store(conversationId, `cm-${body.replaceAll(/[^A-Za-z0-9_-]/g, "-")}`, body, "bob");
const bobRead = (edge: FakeEdge, seq: number) =>
  edge.append({ kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: seq, deliveredSeq: seq });
const hellos = (edge: FakeEdge) =>
  edge.framesOfType("hello").map(({ resumeAfterSeq, conversations }) => ({ resumeAfterSeq, conversations }));

describe("CellwireClient: mailbox", () => {
  it("without a stored position starts live: no resumeAfterSeq, synced makes lastSeq known, then live events", async () => {
    const { edge, client } = setup();
    bobRead(edge, 0);
    fromBob(edge, "before");
    const log = record(client);
    expect(client.lastSeq).toBeUndefined();
    await client.connect();
    // The fake writes welcome and synced in one go, as ws can deliver them in one tick: not missed.
    await expect(client.whenSynced()).resolves.toBe(1);
    expect(hellos(edge)).toEqual([{ resumeAfterSeq: undefined, conversations: undefined }]);
    expect(client.lastSeq).toBe(1);
    bobRead(edge, 1);
    expect(log).toEqual(["synced 1", "event 2 receipt", "receipt bob read 1"]);
    expect(client.lastSeq).toBe(2);
  });

  it("resumes after the stored mailbox seq: the backlog in order, then synced, then live events", async () => {
    const { edge, client } = setup({ resumeAfterSeq: 2 });
    for (const seq of [1, 2, 3, 4]) bobRead(edge, seq);
    const log = record(client);
    const synced = client.whenSynced();
    await client.connect();
    await expect(synced).resolves.toBe(4);
    expect(hellos(edge)).toEqual([{ resumeAfterSeq: 2, conversations: undefined }]);
    bobRead(edge, 5);
    expect(log).toEqual([
      "event 3 receipt",
      "receipt bob read 3",
      "event 4 receipt",
      "receipt bob read 4",
      "synced 4",
      "event 5 receipt",
      "receipt bob read 5",
    ]);
    expect(client.lastSeq).toBe(5);
  });

  it("resumes from lastSeq after a drop and after close(); events the edge replays twice are emitted once", async () => {
    const { edge, clock, client } = setup({ resumeAfterSeq: 0 });
    edge.replayOverlap = 3;
    const seqs: number[] = [];
    client.on("event", (event) => seqs.push(event.seq));
    await client.connect();
    bobRead(edge, 1);
    bobRead(edge, 2);
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    bobRead(edge, 3);
    bobRead(edge, 4);
    expect(seqs).toEqual([1, 2]);
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    // The second session replayed 1..4 (overlap 3 before the cursor 2): 1 and 2 are dropped.
    expect(hellos(edge).map((hello) => hello.resumeAfterSeq)).toEqual([0, 2]);
    expect(seqs).toEqual([1, 2, 3, 4]);

    client.close();
    bobRead(edge, 5);
    await client.connect();
    expect(hellos(edge).map((hello) => hello.resumeAfterSeq)).toEqual([0, 2, 4]);
    expect(seqs).toEqual([1, 2, 3, 4, 5]);
    expect(client.lastSeq).toBe(5);
  });

  it("a gap emits nothing, reports mailbox_gap and reconnects resuming from lastSeq; the backlog fills it", async () => {
    const { edge, clock, client, errors } = setup();
    const seqs: number[] = [];
    client.on("event", (event) => seqs.push(event.seq));
    await client.connect();
    bobRead(edge, 1);
    // The edge loses event 2 on this session and sends event 3.
    edge.deliverLive = false;
    bobRead(edge, 2);
    bobRead(edge, 3);
    edge.deliverLive = true;
    const socket = edge.lastSocket;
    edge.sendEvents(socket, edge.mailbox.slice(2, 3));
    expect(seqs).toEqual([1]);
    expect(errors.map((error) => error.code)).toEqual(["mailbox_gap"]);
    expect(errors[0]?.message).toMatch(/seq 3 when 2 was due/);
    expect(socket.closedByClientWithCode).toBe(standardCloseCodes.normal);
    expect(client.state).toBe("waiting_to_reconnect");

    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    expect(hellos(edge).map((hello) => hello.resumeAfterSeq)).toEqual([undefined, 1]);
    expect(seqs).toEqual([1, 2, 3]);
  });

  it("resync (the events after the cursor were cut): lastSeq jumps to headSeq, then synced and live events", async () => {
    const { edge, client } = setup({ resumeAfterSeq: 1 });
    for (const seq of [1, 2, 3, 4, 5]) bobRead(edge, seq);
    edge.retentionFloorSeq = 3;
    const log = record(client);
    await client.connect();
    await expect(client.whenSynced()).resolves.toBe(5);
    expect(log).toEqual(["resync 5", "synced 5"]);
    bobRead(edge, 6);
    expect(log.slice(2)).toEqual(["event 6 receipt", "receipt bob read 6"]);
  });

  it("remembers the mailbox incarnation synced and resync name, resumes with it, and gives it in positions() (decision 0021)", async () => {
    const { edge, clock, client } = setup();
    const [first, second] = ["5b0c2d9e-0f4a-4b7e-9a61-3c2d1e0f9a8b", "e3a1f7c2-6d5b-4a90-8e1f-2b3c4d5e6f70"];
    edge.cell.mailboxIncarnation = first;
    for (const seq of [1, 2]) bobRead(edge, seq);
    const log = record(client);
    await client.connect();
    await expect(client.whenSynced()).resolves.toBe(2);
    expect(client.positions()).toMatchObject({ mailboxSeq: 2, mailboxIncarnation: first });
    // The mailbox is re-created (a restored database): the next hello names the first one, the edge resyncs.
    edge.cell.mailboxIncarnation = second;
    edge.lastSocket.drop(closeCodes.going_away.code);
    clock.advanceBy(100);
    await flush();
    await expect(client.whenSynced()).resolves.toBe(2);
    expect(edge.framesOfType("hello").map(({ resumeAfterSeq, mailboxIncarnation }) => ({ resumeAfterSeq, mailboxIncarnation }))).toEqual([
      { resumeAfterSeq: undefined, mailboxIncarnation: undefined },
      { resumeAfterSeq: 2, mailboxIncarnation: first },
    ]);
    expect(log).toEqual([
      "synced 2",
      "resync 0",
      "event 1 receipt",
      "receipt bob read 1",
      "event 2 receipt",
      "receipt bob read 2",
      "synced 2",
    ]);
    expect(client.positions()).toMatchObject({ mailboxSeq: 2, mailboxIncarnation: second });
  });

  it("a resume beyond the mailbox head: resync at the head, then the events appended after it are emitted", async () => {
    const { edge, client } = setup({ resumeAfterSeq: 9 });
    for (const seq of [1, 2, 3]) bobRead(edge, seq);
    const log = record(client);
    await client.connect();
    await expect(client.whenSynced()).resolves.toBe(3);
    bobRead(edge, 4);
    expect(log).toEqual(["resync 3", "synced 3", "event 4 receipt", "receipt bob read 4"]);
  });

  it("sends the stored incarnation with the stored resumeAfterSeq, never alone, and refuses a malformed one", async () => {
    const incarnation = "5b0c2d9e-0f4a-4b7e-9a61-3c2d1e0f9a8b";
    const stored = setup({ resumeAfterSeq: 0, resumeMailboxIncarnation: incarnation });
    await stored.client.connect();
    expect(stored.edge.framesOfType("hello")[0]).toMatchObject({ resumeAfterSeq: 0, mailboxIncarnation: incarnation });
    expect(stored.client.positions().mailboxIncarnation).toBeUndefined(); // this edge names none (before 0021)
    const alone = setup({ resumeMailboxIncarnation: incarnation });
    await alone.client.connect();
    expect(alone.edge.framesOfType("hello")[0]?.mailboxIncarnation).toBeUndefined();
    expect(() => setup({ resumeAfterSeq: 0, resumeMailboxIncarnation: "not one.of ours" })).toThrow(TypeError);
  });

  it("an event of a kind this SDK does not know: emitted as event only, lastSeq moves over it, nothing breaks", async () => {
    const { edge, clock, client, errors } = setup();
    const log = record(client);
    await client.connect();
    bobRead(edge, 1);
    // A newer edge's kind, with fields this SDK has never heard of.
    edge.lastSocket.deliver(
      JSON.stringify({ type: "event", seq: 2, event: { kind: "pinned", conversationId: directConversationId, pinnedSeq: 1 } }),
    );
    edge.lastSocket.deliver({
      type: "event",
      seq: 3,
      event: { kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: 2, deliveredSeq: 2 },
    });
    expect(log).toEqual(["synced 0", "event 1 receipt", "receipt bob read 1", "event 2 unknown", "event 3 receipt", "receipt bob read 2"]);
    expect(client.lastSeq).toBe(3);
    expect(errors).toEqual([]);
    expect(client.state).toBe("open");
    // The next session resumes after it: the unknown event is not asked for again.
    edge.lastSocket.drop(closeCodes.going_away.code);
    clock.advanceBy(100);
    await flush();
    expect(hellos(edge).at(-1)?.resumeAfterSeq).toBe(3);
  });

  it("a joined event is emitted as event, then joined; the conversation is followed from its join point", async () => {
    const { edge, client } = setup();
    const log = record(client);
    const joined: unknown[] = [];
    client.on("joined", (entry) => joined.push(entry));
    await client.connect();
    for (const body of ["one", "two"]) fromBob(edge, body, groupConversationId);
    log.length = 0;
    edge.deliverLive = false;
    // alice is added after two messages: her history starts after 2.
    edge.append({
      kind: "joined",
      conversationId: groupConversationId,
      conversationKind: "group",
      title: "team",
      afterSeq: 2,
      addedByUserId: "bob",
    });
    edge.deliverLive = true;
    edge.sendEvents(edge.lastSocket, edge.mailbox.slice(-1));
    expect(joined).toEqual([
      { conversationId: groupConversationId, conversationKind: "group", title: "team", afterSeq: 2, addedByUserId: "bob" },
    ]);
    expect(client.positions().conversations).toEqual({ [groupConversationId]: 2 });
    fromBob(edge, "three", groupConversationId);
    expect(log).toEqual(["event 1 joined", "joined g-B after 2", "message g-B 3 three"]);
  });

  it("a live joined event: the conversation is followed from its join point, its first message checked for a gap", async () => {
    const { edge, client, errors } = setup();
    fromBob(edge, "before-1", groupConversationId);
    const log = record(client);
    await client.connect();
    edge.cell.join(groupConversationId, { title: "team", addedByUserId: "bob" });
    fromBob(edge, "after-1", groupConversationId);
    // An edge that then skips the next one is caught, since the cursor started at the join point.
    edge.deliverLive = false;
    fromBob(edge, "after-2", groupConversationId);
    edge.deliverLive = true;
    edge.sendMessages(edge.lastSocket, [fromBob(edge, "after-3", groupConversationId)]);
    expect(log).toEqual(["synced 0", "event 1 joined", "joined g-B after 1", "message g-B 2 after-1"]);
    expect(errors.map((error) => error.code)).toEqual(["conversation_gap"]);
  });

  it("ignores mailbox and message frames that arrive before the welcome", async () => {
    const { edge, client } = setup();
    const log = record(client);
    const message = fromBob(edge, "early");
    edge.onHello = (_hello, socket) => {
      socket.deliver({
        type: "event",
        seq: 7,
        event: { kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 },
      });
      socket.deliver({ type: "message", message });
      return "welcome";
    };
    await client.connect();
    expect(log).toEqual(["synced 0"]);
    expect(client.positions()).toEqual({ mailboxSeq: 0, conversations: {} });
  });

  it("whenSynced: at once when the session has synced, else at the next synced; rejects when the client closes", async () => {
    const { edge, clock, client } = setup();
    const beforeConnect = client.whenSynced();
    await client.connect();
    await expect(beforeConnect).resolves.toBe(0);
    await expect(client.whenSynced()).resolves.toBe(0);
    bobRead(edge, 1);

    edge.lastSocket.drop(closeCodes.going_away.code);
    let settled = false;
    const afterDrop = client.whenSynced().finally(() => {
      settled = true;
    });
    bobRead(edge, 2);
    // The next session is open but the edge has not sent its synced yet: the last session's does not count.
    edge.syncAfterWelcome = false;
    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    const inOpenSession = client.whenSynced();
    await flush();
    expect(settled).toBe(false);
    edge.sync(edge.lastSocket, { resumeAfterSeq: 1 });
    await expect(afterDrop).resolves.toBe(2);
    await expect(inOpenSession).resolves.toBe(2);
    edge.syncAfterWelcome = true;

    edge.lastSocket.drop(closeCodes.going_away.code);
    const never = client.whenSynced();
    client.close();
    expect(await rejection(never)).toMatchObject({ code: "closed" });
  });
});

describe("CellwireClient: conversations", () => {
  it("emits each message once, per conversation in seq order, the device's own included", async () => {
    const { edge, client } = setup();
    const log = record(client);
    await client.connect();
    fromBob(edge, "hi");
    await client.send(directConversationId, "hello bob");
    fromBob(edge, "team", groupConversationId);
    fromBob(edge, "how are you");
    expect(log).toEqual(["synced 0", "message d-A 1 hi", "message d-A 2 hello bob", "message g-B 1 team", "message d-A 3 how are you"]);
    // Messages are not mailbox events: the mailbox did not move.
    expect(client.lastSeq).toBe(0);
  });

  it("a live first session lists no cursors; every later hello resumes each conversation, the most recently updated first", async () => {
    const { edge, clock, client } = setup();
    await client.connect();
    fromBob(edge, "d1");
    fromBob(edge, "g1", groupConversationId);
    fromBob(edge, "d2");
    expect(client.positions()).toEqual({ mailboxSeq: 0, conversations: { [groupConversationId]: 1, [directConversationId]: 2 } });
    edge.lastSocket.drop(closeCodes.going_away.code);
    fromBob(edge, "g2 while away", groupConversationId);
    fromBob(edge, "d3 while away");
    const log = record(client);
    clock.advanceBy(100);
    await flush();
    expect(hellos(edge)).toEqual([
      { resumeAfterSeq: undefined, conversations: undefined },
      {
        resumeAfterSeq: 0,
        conversations: [
          { conversationId: directConversationId, afterSeq: 2 },
          { conversationId: groupConversationId, afterSeq: 1 },
        ],
      },
    ]);
    // The backlog of every listed conversation comes before synced.
    expect(log).toEqual(["message d-A 3 d3 while away", "message g-B 2 g2 while away", "synced 0"]);
  });

  it("the first hello resumes from the stored positions, each conversation after its cursor", async () => {
    const { edge, client } = setup({ resumeAfterSeq: 0, resumeConversations: { [groupConversationId]: 1, [directConversationId]: 0 } });
    for (const body of ["g1", "g2"]) fromBob(edge, body, groupConversationId);
    fromBob(edge, "d1");
    const log = record(client);
    await client.connect();
    expect(hellos(edge)).toEqual([
      {
        resumeAfterSeq: 0,
        conversations: [
          { conversationId: directConversationId, afterSeq: 0 },
          { conversationId: groupConversationId, afterSeq: 1 },
        ],
      },
    ]);
    expect(log).toEqual(["message d-A 1 d1", "message g-B 2 g2", "synced 0"]);
  });

  it("stored cursors without resumeAfterSeq: the first session starts live, and the cursors still drop what the device holds", async () => {
    const { edge, client } = setup({ resumeConversations: { [directConversationId]: 2 } });
    for (const body of ["d1", "d2"]) fromBob(edge, body);
    const log = record(client);
    await client.connect();
    expect(hellos(edge)).toEqual([{ resumeAfterSeq: undefined, conversations: undefined }]);
    edge.sendMessages(edge.lastSocket, edge.storedMessages(directConversationId));
    fromBob(edge, "d3");
    expect(log).toEqual(["synced 0", "message d-A 3 d3"]);
  });

  it(`lists at most resumeConversationsMax (${resumeConversationsMax}) cursors, the most recently updated; the rest resume from the join point when their next message comes`, async () => {
    const count = resumeConversationsMax + 5;
    // Stored least recently updated first: groupId(0) is the oldest.
    const stored = Object.fromEntries(Array.from({ length: count }, (_, index) => [groupId(index), 0]));
    // The oldest conversation: the device holds its message 1.
    stored[groupId(0)] = 1;
    const { edge, client } = setup({ resumeAfterSeq: 0, resumeConversations: stored });
    fromBob(edge, "old-1", groupId(0));
    const log = record(client);
    await client.connect();
    const listed = edge.framesOfType("hello")[0]?.conversations ?? [];
    expect(listed).toHaveLength(resumeConversationsMax);
    expect(listed[0]).toEqual({ conversationId: groupId(count - 1), afterSeq: 0 });
    expect(listed.at(-1)).toEqual({ conversationId: groupId(5), afterSeq: 0 });
    expect(listed.some((cursor) => cursor.conversationId === groupId(0))).toBe(false);
    // Not listed, so not resumed: nothing of it before synced. The client keeps its cursor, and the edge
    // reads the conversation from the user's join point (0 here) when its next message comes: the message
    // the device holds is dropped, the new one emitted.
    expect(log).toEqual(["synced 0"]);
    expect(Object.keys(client.positions().conversations)).toHaveLength(count);
    fromBob(edge, "old-2", groupId(0));
    expect(log).toEqual(["synced 0", "message g-0 2 old-2"]);
  });

  it("drops a message at or below the conversation's cursor silently (an edge that replays twice)", async () => {
    const { edge, clock, client, errors } = setup({ resumeAfterSeq: 0 });
    edge.replayOverlap = 2;
    const log = record(client);
    await client.connect();
    for (const body of ["d1", "d2", "d3"]) fromBob(edge, body);
    edge.lastSocket.deliver({ type: "message", message: edge.storedMessages(directConversationId)[1] as Message });
    edge.lastSocket.drop(closeCodes.going_away.code);
    fromBob(edge, "d4");
    clock.advanceBy(100);
    await flush();
    // The second session replayed 2..4 (overlap 2 before the cursor 3): 2 and 3 are dropped.
    expect(log.filter((line) => line.startsWith("message"))).toEqual([
      "message d-A 1 d1",
      "message d-A 2 d2",
      "message d-A 3 d3",
      "message d-A 4 d4",
    ]);
    expect(errors).toEqual([]);
  });

  it("a gap in a conversation emits nothing, reports conversation_gap, reconnects and the resume fills it", async () => {
    const { edge, clock, client, errors } = setup();
    const log = record(client);
    await client.connect();
    fromBob(edge, "d1");
    fromBob(edge, "g1", groupConversationId);
    // The edge loses message 2 of the direct conversation on this session and sends message 3.
    edge.deliverLive = false;
    fromBob(edge, "d2");
    const third = fromBob(edge, "d3");
    edge.deliverLive = true;
    const socket = edge.lastSocket;
    edge.sendMessages(socket, [third]);
    expect(errors.map((error) => error.code)).toEqual(["conversation_gap"]);
    expect(errors[0]?.message).toMatch(new RegExp(`seq 3 of conversation ${directConversationId} when 2 was due`));
    expect(socket.closedByClientWithCode).toBe(standardCloseCodes.normal);
    expect(client.state).toBe("waiting_to_reconnect");
    expect(client.positions().conversations).toEqual({ [groupConversationId]: 1, [directConversationId]: 1 });

    clock.advanceBy(100);
    await flush();
    expect(client.state).toBe("open");
    // The gapped conversation is listed first, at the cursor it stopped at.
    expect(hellos(edge).at(-1)).toEqual({
      resumeAfterSeq: 0,
      conversations: [
        { conversationId: directConversationId, afterSeq: 1 },
        { conversationId: groupConversationId, afterSeq: 1 },
      ],
    });
    expect(log.filter((line) => line.startsWith("message"))).toEqual([
      "message d-A 1 d1",
      "message g-B 1 g1",
      "message d-A 2 d2",
      "message d-A 3 d3",
    ]);
  });

  it("a replayed joined event's conversation arrives from its join point before synced", async () => {
    const { edge, client } = setup({ resumeAfterSeq: 0 });
    for (const body of ["before-1", "before-2"]) fromBob(edge, body, groupConversationId);
    edge.cell.join(groupConversationId, { title: "team", addedByUserId: "bob" });
    fromBob(edge, "after-1", groupConversationId);
    const log = record(client);
    await client.connect();
    expect(log).toEqual(["event 1 joined", "joined g-B after 2", "message g-B 3 after-1", "synced 1"]);
    expect(client.positions()).toEqual({ mailboxSeq: 1, conversations: { [groupConversationId]: 3 } });
  });

  it("emits the device's own message once, though its send is transmitted again and the edge replays it", async () => {
    const { edge, clock, client } = setup();
    edge.replayOverlap = 5;
    // The first edge stores the send (its message goes out live) but the connection dies before the ack.
    edge.onRequest = (frame, socket) => {
      if (frame.type !== "send" || socket !== edge.sockets[0]) return "default";
      edge.store(frame.conversationId, frame.clientMessageId, frame.body);
      return "ignore";
    };
    const messages: string[] = [];
    client.on("message", (message) => messages.push(message.clientMessageId));
    await client.connect();
    const sent = client.send(directConversationId, "mine", { clientMessageId: "cm-own" });
    await flush();
    expect(messages).toEqual(["cm-own"]);
    edge.lastSocket.drop(standardCloseCodes.abnormal);
    clock.advanceBy(100);
    await expect(sent).resolves.toMatchObject({ seq: 1, clientMessageId: "cm-own" });
    await flush();
    expect(edge.framesOfType("send")).toHaveLength(2);
    expect(edge.storedMessages(directConversationId)).toHaveLength(1);
    expect(messages).toEqual(["cm-own"]);
  });
});

describe("CellwireClient: positions()", () => {
  it("gives the mailbox seq and every cursor, least recently updated first, as a fresh object that survives close()", async () => {
    const { edge, client } = setup();
    expect(client.positions()).toEqual({ mailboxSeq: undefined, conversations: {} });
    await client.connect();
    fromBob(edge, "d1");
    fromBob(edge, "g1", groupConversationId);
    bobRead(edge, 1);
    fromBob(edge, "d2");
    const positions = client.positions();
    expect(positions).toEqual({ mailboxSeq: 1, conversations: { [groupConversationId]: 1, [directConversationId]: 2 } });
    expect(Object.keys(positions.conversations)).toEqual([groupConversationId, directConversationId]);
    client.close();
    fromBob(edge, "g2", groupConversationId);
    expect(client.positions()).toEqual(positions);
    expect(client.positions()).not.toBe(positions);
  });

  it("passed back to a new client, resumes where the last one stopped: nothing lost, nothing twice", async () => {
    const { edge, client } = setup();
    await client.connect();
    fromBob(edge, "d1");
    fromBob(edge, "g1", groupConversationId);
    bobRead(edge, 1);
    const stored = client.positions();
    client.close();
    fromBob(edge, "d2");
    bobRead(edge, 2);
    fromBob(edge, "g2", groupConversationId);

    const next = new CellwireClient({
      url: "ws://edge.test/ws",
      tokenProvider: async () => "token",
      WebSocket: edge.WebSocket,
      clock: new ManualClock(),
      heartbeat: false,
      ...(stored.mailboxSeq === undefined ? {} : { resumeAfterSeq: stored.mailboxSeq }),
      resumeConversations: stored.conversations,
    });
    const log = record(next);
    await next.connect();
    await next.whenSynced();
    expect(log).toEqual(["message g-B 2 g2", "message d-A 2 d2", "event 2 receipt", "receipt bob read 2", "synced 2"]);
    next.close();
  });
});
