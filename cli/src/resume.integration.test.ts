// Conversation logs and resume on the real topology (decision 0009): a device that was away receives
// exactly the messages it missed in each conversation (a new device, resumeAfterSeq 0, every conversation
// from its join point; a device resuming with its cursors only what follows them), whether it comes back
// to idle conversations or while messages keep arriving; every device of a user converges on the same
// messages per conversation and the same mailbox; the edge itself writes each seq of a session once, in
// order; the history checker finds nothing wrong with the whole run. Last, a cursor the mailbox cannot
// honour (decision 0021): beyond its head, or of another incarnation, is answered with resync, and the
// live events after it still arrive.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient, type ReceivedEvent } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { decodeServerFrame, protocolVersion, type Message, type ServerFrame } from "@cellwire/protocol";
import { RawSocket } from "../test/raw-socket.ts";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const deliveryDeadlineMs = 15_000;

let test: TestTopology;
const run = new RecordedRun();

function edgeUrl(edgeIndex: number): string {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  return edge.webSocketUrl;
}

function device(userId: string, deviceId: string, edgeIndex: number, resumeAfterSeq?: number): Promise<RecordedDevice> {
  return run.openDevice(userId, deviceId, [edgeUrl(edgeIndex)], resumeAfterSeq);
}

let sent = 0;
function send(from: RecordedDevice, conversationId: string, body: string): Promise<{ messageId: string; seq: number }> {
  return run.send(from, conversationId, body, `${from.userId}-${from.deviceId}-${sent++}`);
}

const inConversation = (messages: readonly Message[], conversationId: string): Message[] =>
  messages.filter((message) => message.conversationId === conversationId);
const seqsIn = (messages: readonly Message[], conversationId: string): number[] =>
  inConversation(messages, conversationId).map((message) => message.seq);
const idsIn = (messages: readonly Message[], conversationId: string): string[] =>
  inConversation(messages, conversationId).map((message) => message.messageId);
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, index) => from + index);

/** The conversations both tests use, made by the first. */
let direct = "";
let group = "";
const directTotal = 40;
const groupTotal = 10;

/** Sends rounds from..to-1: alice one direct message each, carol one group message every fourth. */
async function exchange(alice: RecordedDevice, carol: RecordedDevice, from: number, to: number): Promise<void> {
  for (let index = from; index < to; index++) {
    await send(alice, direct, `direct ${index}`);
    if (index % 4 === 0) await send(carol, group, `group ${index}`);
  }
}

/**
 * A session on a bare socket that resumes the whole mailbox (resumeAfterSeq 0) unless `cursor` says
 * otherwise (`{}` starts live), to see the frames the edge writes before the SDK drops anything.
 */
async function rawResume(
  userId: string,
  edgeIndex: number,
  cursor: { readonly resumeAfterSeq?: number; readonly mailboxIncarnation?: string } = { resumeAfterSeq: 0 },
): Promise<RawSocket> {
  const socket = await RawSocket.open(edgeUrl(edgeIndex));
  const token = await signDevToken(defaultDevKeyDirectory, userId, { deviceId: "raw" });
  socket.send(JSON.stringify({ type: "hello", protocolVersion, token, deviceId: "raw", ...cursor }));
  await socket.frame((frame) => frame["type"] === "welcome");
  return socket;
}

function serverFrames(socket: RawSocket): ServerFrame[] {
  return socket.frames.flatMap((received) => {
    const decoded = decodeServerFrame(received.text);
    if (!decoded.ok) throw new Error(`the edge wrote a frame a client cannot decode: ${received.text.slice(0, 200)}`);
    return decoded.value === null ? [] : [decoded.value];
  });
}

function isMessageAt(frame: Record<string, unknown>, conversationId: string, seq: number): boolean {
  const message = frame["message"];
  if (frame["type"] !== "message" || typeof message !== "object" || message === null) return false;
  return "conversationId" in message && message.conversationId === conversationId && "seq" in message && message.seq === seq;
}

beforeAll(async () => {
  test = await startTestTopology({ label: "resume" });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
    ["dave", "a"],
    ["erin", "b"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

describe("conversation logs and resume", () => {
  it("gives a returning device exactly the messages it missed in each conversation and makes every device converge", async () => {
    const alice = await device("alice", "phone", 0);
    const carol = await device("carol", "phone", 1);
    const bobPhone = await device("bob", "phone", 1);
    // Bob's laptop is known before any conversation exists, then away for all of it.
    const bobLaptop = await device("bob", "laptop", 0, 0);
    bobLaptop.client.close();
    // Bob's tablet reads everything from the start, then goes away halfway.
    const bobTablet = await device("bob", "tablet", 1, 0);

    const directConversation = await alice.client.openDirect("bob");
    const groupConversation = await carol.client.createGroup("trio", ["alice", "bob"]);
    direct = directConversation.conversationId;
    group = groupConversation.conversationId;
    run.conversation(direct, directConversation.memberUserIds);
    run.conversation(group, groupConversation.memberUserIds);

    await exchange(alice, carol, 0, directTotal / 2);
    await bobTablet.untilDelivered(deliveryDeadlineMs);
    expect([bobTablet.cursorOf(direct), bobTablet.cursorOf(group), bobTablet.lastSeq()]).toEqual([directTotal / 2, groupTotal / 2, 2]);
    bobTablet.client.close();
    await exchange(alice, carol, directTotal / 2, directTotal);
    await Promise.all([alice, carol, bobPhone].map((live) => live.untilDelivered(deliveryDeadlineMs)));

    // The live phone holds both conversations whole (they began after it connected), each in order, each message once.
    expect(seqsIn(bobPhone.messages, direct)).toEqual(range(1, directTotal));
    expect(seqsIn(bobPhone.messages, group)).toEqual(range(1, groupTotal));
    expect(bobPhone.messages).toHaveLength(directTotal + groupTotal);
    // Its mailbox holds bob's two joined events, each starting its conversation at the join point 0.
    expect(bobPhone.events.map(({ seq }) => seq)).toEqual([1, 2]);
    const joinedOf = (held: RecordedDevice): [string, number][] =>
      held.events.flatMap(({ event }) => (event.kind === "joined" ? [[event.conversationId, event.afterSeq] as [string, number]] : []));
    expect(joinedOf(bobPhone).sort()).toEqual(
      [
        [direct, 0],
        [group, 0],
      ].sort(),
    );

    // The laptop held nothing: the whole mailbox, and every conversation from bob's join point, before its synced.
    expect(bobLaptop.lastSeq()).toBe(0);
    const startedAt = performance.now();
    const laptopAgain = await device("bob", "laptop", 0, bobLaptop.lastSeq());
    const resumeMs = performance.now() - startedAt;
    expect(laptopAgain.events).toEqual(bobPhone.events);
    expect(seqsIn(laptopAgain.messages, direct)).toEqual(range(1, directTotal));
    expect(seqsIn(laptopAgain.messages, group)).toEqual(range(1, groupTotal));
    expect(laptopAgain.messages).toHaveLength(directTotal + groupTotal);
    for (const conversationId of [direct, group])
      expect(idsIn(laptopAgain.messages, conversationId)).toEqual(idsIn(bobPhone.messages, conversationId));
    process.stdout.write(`resume of ${directTotal + groupTotal} missed messages in 2 conversations took ${resumeMs.toFixed(0)} ms\n`);

    // The tablet resumes with its cursors: only what followed them, and no mailbox event (it held both).
    const tabletAgain = await device("bob", "tablet", 1, bobTablet.lastSeq());
    expect(seqsIn(tabletAgain.messages, direct)).toEqual(range(directTotal / 2 + 1, directTotal));
    expect(seqsIn(tabletAgain.messages, group)).toEqual(range(groupTotal / 2 + 1, groupTotal));
    expect(tabletAgain.messages).toHaveLength(directTotal / 2 + groupTotal / 2);
    for (const conversationId of [direct, group]) {
      expect([...idsIn(bobTablet.messages, conversationId), ...idsIn(tabletAgain.messages, conversationId)]).toEqual(
        idsIn(bobPhone.messages, conversationId),
      );
    }
    expect(tabletAgain.events).toEqual([]);

    // Alice's own messages are in the logs like anyone's, so a new device of hers converges on them too.
    const aliceLaptop = await device("alice", "laptop", 1, 0);
    for (const conversationId of [direct, group])
      expect(idsIn(aliceLaptop.messages, conversationId)).toEqual(idsIn(alice.messages, conversationId));
    expect(seqsIn(aliceLaptop.messages, direct)).toEqual(range(1, directTotal));
    expect(seqsIn(aliceLaptop.messages, group)).toEqual(range(1, groupTotal));
    // Carol is no member of the direct conversation: none of it reaches her.
    expect(carol.messages.filter((message) => message.conversationId !== group)).toEqual([]);
    expect(seqsIn(carol.messages, group)).toEqual(range(1, groupTotal));
  });

  it("resumes while messages keep arriving without losing or doubling any", async () => {
    const alice = await device("alice", "desk", 0);
    const { lastSeq: base } = await alice.client.openDirect("bob");
    expect(base).toBe(directTotal);
    const bobWatch = await device("bob", "watch", 1);
    // The tablet leaves holding both conversations whole, and comes back while the traffic runs.
    const tabletBefore = run.devices.filter((held) => held.userId === "bob" && held.deviceId === "tablet").at(-1);
    if (tabletBefore === undefined) throw new Error("the first test opened no tablet");
    expect([tabletBefore.cursorOf(direct), tabletBefore.cursorOf(group)]).toEqual([directTotal, groupTotal]);
    tabletBefore.client.close();

    const during = 30;
    const head = base + during;
    let acked = 0;
    let underWay: () => void = () => {};
    const trafficUnderWay = new Promise<void>((resolve) => {
      underWay = resolve;
    });
    const sending = (async () => {
      for (let index = 0; index < during; index++) {
        await send(alice, direct, `during resume ${index}`);
        acked++;
        if (acked === during / 3) underWay();
      }
    })();
    // The devices come back once a third is sent: those are in the logs they read, the rest arrive live meanwhile.
    await Promise.race([trafficUnderWay, sending]);
    const ackedAtResume = acked;
    const [late, tablet, raw] = await Promise.all([
      device("bob", "late", 0, 0),
      device("bob", "tablet", 0, tabletBefore.lastSeq()),
      rawResume("bob", 1),
    ]);
    const ackedAtSync = acked;
    await sending;
    await Promise.all([bobWatch, late, tablet].map((held) => held.untilMessage(direct, head, deliveryDeadlineMs)));

    // The watch started live, before the traffic: every message of it, in order, once.
    expect(seqsIn(bobWatch.messages, direct)).toEqual(range(base + 1, head));
    // The late device started from nothing: both conversations whole, the ones that arrived during its sync included.
    expect(seqsIn(late.messages, direct)).toEqual(range(1, head));
    expect(idsIn(late.messages, direct).slice(base)).toEqual(idsIn(bobWatch.messages, direct));
    expect(seqsIn(late.messages, group)).toEqual(range(1, groupTotal));
    expect(late.messages).toHaveLength(head + groupTotal);
    // The tablet resumed from its cursors: exactly what it missed, the live ones included.
    expect(seqsIn(tablet.messages, direct)).toEqual(range(base + 1, head));
    expect(idsIn(tablet.messages, direct)).toEqual(idsIn(bobWatch.messages, direct));
    expect(tablet.messages).toHaveLength(during);
    expect(tablet.events).toEqual([]);

    // What the edge wrote, before any SDK dropped a repeat: each conversation's seqs once, consecutive from
    // the join point; the mailbox's likewise; and synced only after the backlog of what was there when read.
    await raw.frame((frame) => isMessageAt(frame, direct, head), deliveryDeadlineMs);
    const frames = serverFrames(raw);
    raw.close();
    const rawMessages = frames.flatMap((frame) => (frame.type === "message" ? [frame.message] : []));
    expect(seqsIn(rawMessages, direct)).toEqual(range(1, head));
    expect(seqsIn(rawMessages, group)).toEqual(range(1, groupTotal));
    expect(frames.flatMap((frame) => (frame.type === "event" ? [frame.seq] : []))).toEqual([1, 2]);
    const syncedAt = frames.findIndex((frame) => frame.type === "synced");
    expect(syncedAt).toBeGreaterThan(0);
    const beforeSynced = frames.slice(0, syncedAt).flatMap((frame) => (frame.type === "message" ? [frame.message] : []));
    expect(seqsIn(beforeSynced, group)).toEqual(range(1, groupTotal));
    expect(seqsIn(beforeSynced, direct).length).toBeGreaterThanOrEqual(base);
    process.stdout.write(
      `resume under traffic: the devices came back after ${ackedAtResume} of ${during} messages and had synced after ${ackedAtSync}\n`,
    );
  });

  it("passes the history checker over the whole run", async () => {
    // Quiescence: every open device holds everything acked in the conversations it follows.
    await run.settle(deliveryDeadlineMs);
    const report = await run.check(testServices.postgresAdminUrl, test.namespace, ["a", "b"]);
    expect(report.findings).toEqual([]);
    expect(report.ok).toBe(true);
    expect(run.sequenceGaps).toEqual([]);
    expect(run.record.acks.length).toBe(directTotal + groupTotal + 30);
  });
});

// After the history checker, so that what it counts is the run above alone.
describe("a mailbox cursor the mailbox cannot honour (decision 0021)", () => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  let requests = 0;

  /** Dave, on a bare socket, makes a group with erin: one joined event in erin's mailbox. */
  async function groupWithErin(dave: RawSocket, title: string): Promise<string> {
    const requestId = `group-${requests++}`;
    dave.send(JSON.stringify({ type: "createGroup", requestId, title, memberUserIds: ["erin"] }));
    const reply = await dave.frame((frame) => frame["requestId"] === requestId, deliveryDeadlineMs);
    const conversation = reply["conversation"];
    if (
      reply["type"] !== "conversation" ||
      typeof conversation !== "object" ||
      conversation === null ||
      !("conversationId" in conversation)
    ) {
      throw new Error(`createGroup answered ${JSON.stringify(reply)}`);
    }
    return String(conversation.conversationId);
  }

  /** Resolves once the user's mailbox holds the event at `seq` (read by a session of its own, then closed). */
  async function untilMailboxHolds(userId: string, seq: number): Promise<void> {
    const probe = await rawResume(userId, 0, { resumeAfterSeq: seq - 1 });
    try {
      await probe.frame((frame) => frame["type"] === "event" && frame["seq"] === seq, deliveryDeadlineMs);
    } finally {
      probe.close();
    }
  }

  function mailboxFrames(socket: RawSocket): ServerFrame[] {
    return serverFrames(socket).filter((frame) => frame.type === "event" || frame.type === "synced" || frame.type === "resync");
  }

  it("answers a resume beyond the head with resync at the head, and the next live event and message arrive", async () => {
    const dave = await rawResume("dave", 0, {});
    await dave.frame((frame) => frame["type"] === "synced", deliveryDeadlineMs);
    await groupWithErin(dave, "first");
    // The joined event reaches erin's mailbox by the group's relay, after the reply: wait until it is there.
    await untilMailboxHolds("erin", 1);
    // Erin's mailbox now holds one event; her device claims seq 6 (head + 5), as after a database restore.
    const head = 1;
    const raw = await rawResume("erin", 1, { resumeAfterSeq: head + 5 });
    await raw.frame((frame) => frame["type"] === "synced", deliveryDeadlineMs);
    const phone = new CellwireClient({
      url: edgeUrl(0),
      deviceId: "phone",
      WebSocket,
      tokenProvider: () => signDevToken(defaultDevKeyDirectory, "erin", { deviceId: "phone" }),
      resumeAfterSeq: head + 5,
    });
    const events: ReceivedEvent[] = [];
    const messages: Message[] = [];
    const resyncs: number[] = [];
    phone.on("event", (event) => events.push(event));
    phone.on("message", (message) => messages.push(message));
    phone.on("resync", ({ headSeq }) => resyncs.push(headSeq));
    const messageArrived = new Promise<void>((resolve) => phone.on("message", () => resolve()));
    const secondEventArrived = new Promise<void>((resolve) => phone.on("event", (event) => event.seq === head + 1 && resolve()));
    try {
      await phone.connect();
      await expect(phone.whenSynced()).resolves.toBe(head);
      expect(resyncs).toEqual([head]);
      const [resync, synced] = mailboxFrames(raw);
      expect(resync).toEqual({ type: "resync", headSeq: head, mailboxIncarnation: expect.stringMatching(uuid) });
      expect(synced).toEqual({ type: "synced", seq: head, mailboxIncarnation: resync?.type === "resync" ? resync.mailboxIncarnation : "" });
      // The next event (seq 2, at or below the old claim of 6) and the next message reach both sessions live.
      const second = await groupWithErin(dave, "second");
      const requestId = `send-${requests++}`;
      dave.send(JSON.stringify({ type: "send", requestId, conversationId: second, clientMessageId: requestId, body: "after the resync" }));
      await dave.frame((frame) => frame["requestId"] === requestId && frame["type"] === "ack", deliveryDeadlineMs);
      await raw.frame((frame) => isMessageAt(frame, second, 1), deliveryDeadlineMs);
      // The joined event comes by the relay, the message by the fan-out: either may be first.
      await raw.frame((frame) => frame["type"] === "event" && frame["seq"] === head + 1, deliveryDeadlineMs);
      expect(
        mailboxFrames(raw)
          .slice(2)
          .map((frame) => (frame.type === "event" ? frame.seq : frame.type)),
      ).toEqual([head + 1]);
      await withDeadline(messageArrived, "erin's phone received no message after its resync");
      await withDeadline(secondEventArrived, "erin's phone received no event after its resync");
      expect(events.map(({ seq }) => seq)).toEqual([head + 1]);
      expect(messages.map((message) => [message.conversationId, message.seq, message.body])).toEqual([[second, 1, "after the resync"]]);
      expect(phone.positions()).toMatchObject({
        mailboxSeq: head + 1,
        mailboxIncarnation: resync?.type === "resync" ? resync.mailboxIncarnation : "",
      });
    } finally {
      phone.close();
      raw.close();
      dave.close();
    }
  });

  it("answers a cursor of another mailbox incarnation with resync at the floor and replays this mailbox", async () => {
    const raw = await rawResume("erin", 0, { resumeAfterSeq: 1, mailboxIncarnation: "00000000-0000-4000-8000-000000000000" });
    await raw.frame((frame) => frame["type"] === "synced", deliveryDeadlineMs);
    raw.close();
    const frames = mailboxFrames(raw);
    expect(frames.map((frame) => (frame.type === "event" ? frame.seq : frame.type))).toEqual(["resync", 1, 2, "synced"]);
    expect(frames[0]).toEqual({ type: "resync", headSeq: 0, mailboxIncarnation: expect.stringMatching(uuid) });
  });
});

/** `promise`, or a failure naming `what` once the delivery deadline passes. */
async function withDeadline(promise: Promise<void>, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${deliveryDeadlineMs} ms`)), deliveryDeadlineMs);
  });
  try {
    await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
