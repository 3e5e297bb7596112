// The history checker against records built by a small simulation of a correct Cellwire (simulate): a
// clean record passes; each test then plants one fault and expects exactly the kinds that fault breaks.
// The properties run the simulation on random schedules (fast-check prints the seed and the shrunk
// schedule on failure).
import fc from "fast-check";
import type { ConversationKind, MailboxEvent, Message } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import {
  checkHistory,
  findingsListedMax,
  idsListedMax,
  type CheckReport,
  type ConversationMember,
  type DeliveredMessage,
  type FindingKind,
  type HistoryRecord,
  type MailboxEntry,
} from "./history-checker.ts";

// ---------------------------------------------------------------------------------------------------
// A correct Cellwire, simulated: each send is stored once with the next conversation seq; each
// membership puts a joined event (afterSeq: the conversation's head then) in the member's mailbox, each
// receipt a receipt event in every member's; each device receives its user's mailbox from where it
// started and each conversation from its start point there (its cursor, or the join point of a joined
// event it received), in send order.

type Step =
  | { kind: "create"; conversationId: string; conversationKind: ConversationKind; title: string | null; memberUserIds: string[] }
  | { kind: "add"; conversationId: string; addedByUserId: string; userIds: string[] }
  | { kind: "send"; conversationId: string; senderUserId: string; senderDeviceId: string; body: string; attempts: number; acked: boolean }
  | { kind: "receipt"; conversationId: string; userId: string; readSeq: number };

/** Where one device starts and stops. */
type DeviceView = {
  /** The mailbox seq it started after (its resumeAfterSeq), recorded unless it is live. */
  startAfterSeq: number;
  /** A live device records no start: the checker infers each from the first event or message received. */
  live: boolean;
  /** The last mailbox seq it received. */
  endSeq: number;
  /** A conversation it knew before its start: the seq it held then (between its join point and its head). */
  cursorOf: (joinedAfterSeq: number, head: number) => number;
  /** The last seq of a conversation it received (between its start there and the head). */
  endOf: (startAfterSeq: number, head: number) => number;
};

type Scenario = {
  users: { userId: string; deviceIds: string[] }[];
  steps: Step[];
  expectComplete: boolean;
  /** Default: the whole mailbox, recorded, and every conversation to its head. */
  devices?: (userId: string, deviceId: string, mailboxLastSeq: number) => DeviceView;
};

const sentAtMsBase = 1_700_000_000_000;

type SimulatedConversation = { kind: ConversationKind; title: string | null; members: ConversationMember[]; head: number };

function simulate(scenario: Scenario): HistoryRecord {
  const record: HistoryRecord = {
    sends: [],
    acks: [],
    deliveries: [],
    database: { messages: [], members: [], mailboxes: [] },
    expectComplete: scenario.expectComplete,
  };
  const mailboxes = new Map(
    scenario.users.map((user) => [user.userId, { userId: user.userId, lastSeq: 0, floorSeq: 0, events: [] as MailboxEntry[] }]),
  );
  const conversations = new Map<string, SimulatedConversation>();
  const append = (userId: string, eventId: string, event: MailboxEvent): void => {
    const mailbox = mailboxes.get(userId);
    if (mailbox === undefined) throw new Error(`scenario: ${userId} is not a user`);
    mailbox.lastSeq++;
    mailbox.events.push({ seq: mailbox.lastSeq, eventId, event });
  };
  const conversationOf = (conversationId: string): SimulatedConversation => {
    const conversation = conversations.get(conversationId);
    if (conversation === undefined) throw new Error(`scenario: no conversation ${conversationId}`);
    return conversation;
  };
  const join = (conversationId: string, userIds: readonly string[], addedByUserId: string): void => {
    const conversation = conversationOf(conversationId);
    for (const userId of userIds) {
      if (conversation.members.some((member) => member.userId === userId)) continue;
      conversation.members.push({ userId, joinedAfterSeq: conversation.head });
      const event: MailboxEvent = {
        kind: "joined",
        conversationId,
        conversationKind: conversation.kind,
        title: conversation.title,
        afterSeq: conversation.head,
        addedByUserId,
      };
      append(userId, `joined-${conversationId}`, event);
    }
  };
  let sendIndex = 0;
  let receiptIndex = 0;
  for (const step of scenario.steps) {
    switch (step.kind) {
      case "create": {
        conversations.set(step.conversationId, { kind: step.conversationKind, title: step.title, members: [], head: 0 });
        join(step.conversationId, step.memberUserIds, step.memberUserIds[0] ?? "nobody");
        break;
      }
      case "add": {
        join(step.conversationId, step.userIds, step.addedByUserId);
        break;
      }
      case "send": {
        const conversation = conversationOf(step.conversationId);
        const clientMessageId = `c${sendIndex}`;
        conversation.head++;
        const message: Message = {
          conversationId: step.conversationId,
          messageId: `m${sendIndex}`,
          seq: conversation.head,
          senderUserId: step.senderUserId,
          senderDeviceId: step.senderDeviceId,
          clientMessageId,
          body: step.body,
          sentAtMs: sentAtMsBase + sendIndex,
        };
        sendIndex++;
        record.database.messages.push(message);
        for (let attempt = 0; attempt < step.attempts; attempt++) {
          record.sends.push({
            senderUserId: step.senderUserId,
            senderDeviceId: step.senderDeviceId,
            conversationId: step.conversationId,
            clientMessageId,
            body: step.body,
          });
          // Each attempt of a retried send is acked with the same answer.
          if (step.acked)
            record.acks.push({
              senderUserId: step.senderUserId,
              conversationId: step.conversationId,
              clientMessageId,
              messageId: message.messageId,
              seq: message.seq,
            });
        }
        break;
      }
      case "receipt": {
        const conversation = conversationOf(step.conversationId);
        const event: MailboxEvent = {
          kind: "receipt",
          conversationId: step.conversationId,
          userId: step.userId,
          readSeq: step.readSeq,
          deliveredSeq: step.readSeq,
        };
        for (const member of conversation.members) append(member.userId, `receipt-${receiptIndex}`, event);
        receiptIndex++;
        break;
      }
    }
  }
  record.database.members = [...conversations].map(([conversationId, conversation]) => ({
    conversationId,
    members: conversation.members.map((member) => ({ ...member })),
  }));
  record.database.mailboxes = [...mailboxes.values()];
  for (const user of scenario.users) {
    const mailbox = mailboxes.get(user.userId);
    if (mailbox === undefined) continue;
    for (const deviceId of user.deviceIds) {
      const view = scenario.devices?.(user.userId, deviceId, mailbox.lastSeq) ?? {
        startAfterSeq: 0,
        live: false,
        endSeq: mailbox.lastSeq,
        cursorOf: (_joinedAfterSeq: number, head: number) => head,
        endOf: (_startAfterSeq: number, head: number) => head,
      };
      const events = mailbox.events
        .filter((entry) => entry.seq > view.startAfterSeq && entry.seq <= view.endSeq)
        .map((entry) => ({ seq: entry.seq, event: { ...entry.event } }));
      const conversationStarts: Record<string, number> = {};
      const windows = new Map<string, { afterSeq: number; toSeq: number }>();
      for (const [conversationId, conversation] of conversations) {
        const member = conversation.members.find((candidate) => candidate.userId === user.userId);
        const joinedSeq = mailbox.events.find((entry) => entry.eventId === `joined-${conversationId}`)?.seq;
        if (member === undefined || joinedSeq === undefined) continue;
        let startAfterSeq: number;
        if (joinedSeq > view.startAfterSeq && joinedSeq <= view.endSeq) startAfterSeq = member.joinedAfterSeq;
        else if (joinedSeq <= view.startAfterSeq) {
          startAfterSeq = clamp(view.cursorOf(member.joinedAfterSeq, conversation.head), member.joinedAfterSeq, conversation.head);
          if (!view.live) conversationStarts[conversationId] = startAfterSeq;
        } else continue;
        windows.set(conversationId, {
          afterSeq: startAfterSeq,
          toSeq: clamp(view.endOf(startAfterSeq, conversation.head), startAfterSeq, conversation.head),
        });
      }
      const messages: DeliveredMessage[] = [];
      for (const { conversationId, seq, messageId } of record.database.messages) {
        const window = windows.get(conversationId);
        if (window !== undefined && seq > window.afterSeq && seq <= window.toSeq) messages.push({ conversationId, seq, messageId });
      }
      record.deliveries.push({
        userId: user.userId,
        deviceId,
        ...(view.live ? {} : { startAfterSeq: view.startAfterSeq, conversationStarts }),
        messages,
        events,
      });
    }
  }
  return record;
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

// ---------------------------------------------------------------------------------------------------
// The fixed scenario of the fault tests

const direct = "d-alicebob0000000000000000".slice(0, 24);
const group = "g-trio00000000000000000000".slice(0, 24);

function scenario(): Scenario {
  return {
    users: [
      { userId: "alice", deviceIds: ["phone", "laptop"] },
      { userId: "bob", deviceIds: ["phone"] },
      { userId: "carol", deviceIds: ["phone"] },
      { userId: "dave", deviceIds: ["phone"] },
    ],
    // m0..m5. The direct conversation holds m0 (seq 1), m1 (2), m5 (3); the group m2 (1), m3 (2), m4 (3).
    // Mailboxes: alice and bob: 1 joined direct, 2 joined group, 3 receipt; carol: 1 joined group, 2
    // receipt; dave (added to the group after its seq 2): 1 joined group, 2 receipt.
    steps: [
      { kind: "create", conversationId: direct, conversationKind: "direct", title: null, memberUserIds: ["alice", "bob"] },
      { kind: "send", conversationId: direct, senderUserId: "alice", senderDeviceId: "phone", body: "hi bob", attempts: 1, acked: true },
      { kind: "send", conversationId: direct, senderUserId: "bob", senderDeviceId: "phone", body: "hi alice", attempts: 1, acked: true },
      { kind: "create", conversationId: group, conversationKind: "group", title: "trio", memberUserIds: ["carol", "alice", "bob"] },
      { kind: "send", conversationId: group, senderUserId: "carol", senderDeviceId: "phone", body: "hello all", attempts: 2, acked: true },
      {
        kind: "send",
        conversationId: group,
        senderUserId: "alice",
        senderDeviceId: "laptop",
        body: "from my laptop",
        attempts: 1,
        acked: true,
      },
      { kind: "add", conversationId: group, addedByUserId: "carol", userIds: ["dave"] },
      { kind: "send", conversationId: group, senderUserId: "bob", senderDeviceId: "phone", body: "ack lost", attempts: 1, acked: false },
      { kind: "receipt", conversationId: group, userId: "dave", readSeq: 3 },
      { kind: "send", conversationId: direct, senderUserId: "alice", senderDeviceId: "phone", body: "last one", attempts: 1, acked: true },
    ],
    expectComplete: true,
  };
}

const clean = (): HistoryRecord => simulate(scenario());

function kindsOf(report: CheckReport): FindingKind[] {
  return [...new Set(report.findings.map((finding) => finding.kind))].sort();
}

/** Asserts the report names exactly these kinds (the findings are printed when it does not). */
function expectKinds(record: HistoryRecord, expected: FindingKind[]): CheckReport {
  const report = checkHistory(record);
  expect(kindsOf(report), JSON.stringify(report.findings, null, 2)).toEqual([...expected].sort());
  expect(report.ok).toBe(expected.length === 0);
  return report;
}

function details(report: CheckReport): string[] {
  return report.findings.map((finding) => finding.detail);
}

function mailboxOf(record: HistoryRecord, userId: string) {
  const mailbox = record.database.mailboxes.find((candidate) => candidate.userId === userId);
  if (mailbox === undefined) throw new Error(`no mailbox for ${userId}`);
  return mailbox;
}

function deviceOf(record: HistoryRecord, userId: string, deviceId: string) {
  const device = record.deliveries.find((candidate) => candidate.userId === userId && candidate.deviceId === deviceId);
  if (device === undefined) throw new Error(`no device ${userId}/${deviceId}`);
  return device;
}

function devicesOf(record: HistoryRecord, userId: string) {
  return record.deliveries.filter((device) => device.userId === userId);
}

function storedOf(record: HistoryRecord, messageId: string): Message {
  const message = record.database.messages.find((candidate) => candidate.messageId === messageId);
  if (message === undefined) throw new Error(`no stored ${messageId}`);
  return message;
}

function memberOf(record: HistoryRecord, conversationId: string, userId: string): ConversationMember {
  const member = record.database.members
    .find((entry) => entry.conversationId === conversationId)
    ?.members.find((candidate) => candidate.userId === userId);
  if (member === undefined) throw new Error(`${userId} is no member of ${conversationId}`);
  return member;
}

/** Changes a message everywhere it appears (stored, acks, devices), as a consistent system would. */
function rewriteMessage(record: HistoryRecord, messageId: string, change: Partial<Message>): void {
  const rewrite = (message: Message): Message => (message.messageId === messageId ? { ...message, ...change } : message);
  record.database.messages = record.database.messages.map(rewrite);
  for (const ack of record.acks) {
    if (ack.messageId !== messageId) continue;
    if (change.seq !== undefined) ack.seq = change.seq;
    if (change.messageId !== undefined) ack.messageId = change.messageId;
  }
  for (const device of record.deliveries) {
    device.messages = device.messages.map((delivered) =>
      delivered.messageId === messageId
        ? { conversationId: delivered.conversationId, seq: change.seq ?? delivered.seq, messageId: change.messageId ?? messageId }
        : delivered,
    );
  }
}

/** Appends an event to a user's mailbox at its next seq, and to each of its devices. */
function appendToMailbox(record: HistoryRecord, userId: string, eventId: string, event: MailboxEvent): number {
  const mailbox = mailboxOf(record, userId);
  mailbox.lastSeq++;
  mailbox.events.push({ seq: mailbox.lastSeq, eventId, event });
  for (const device of devicesOf(record, userId)) device.events.push({ seq: mailbox.lastSeq, event: { ...event } });
  return mailbox.lastSeq;
}

/** Takes an event out of a user's mailbox and renumbers the events after it, on its devices too. */
function removeFromMailbox(record: HistoryRecord, userId: string, seq: number): void {
  const mailbox = mailboxOf(record, userId);
  const renumber = <T extends { seq: number }>(events: T[]): T[] =>
    events.filter((event) => event.seq !== seq).map((event) => (event.seq > seq ? { ...event, seq: event.seq - 1 } : event));
  mailbox.events = renumber(mailbox.events);
  mailbox.lastSeq--;
  for (const device of devicesOf(record, userId)) device.events = renumber(device.events);
}

const joinedDirect = (afterSeq: number): MailboxEvent => ({
  kind: "joined",
  conversationId: direct,
  conversationKind: "direct",
  title: null,
  afterSeq,
  addedByUserId: "alice",
});

// ---------------------------------------------------------------------------------------------------

describe("checkHistory: a clean record", () => {
  it("passes, with every count at zero and a summary of what it checked", () => {
    const report = expectKinds(clean(), []);
    expect(report.findings).toEqual([]);
    expect(report.findingsTotal).toBe(0);
    expect(Object.values(report.counts).every((count) => count === 0)).toBe(true);
    expect(report.summary).toBe(
      "history check passed: 7 send attempts (6 distinct), 6 acks, 6 stored messages in 2 conversations, 4 mailboxes, 5 devices, run quiescent",
    );
  });

  it("passes when the run is not quiescent and devices stopped short of their heads", () => {
    const record = simulate({
      ...scenario(),
      expectComplete: false,
      devices: (_user, _device, lastSeq) => ({
        startAfterSeq: 1,
        live: true,
        endSeq: Math.max(1, lastSeq - 1),
        cursorOf: (joinedAfterSeq) => joinedAfterSeq + 1,
        endOf: (startAfterSeq) => startAfterSeq + 1,
      }),
    });
    expect(record.deliveries.some((device) => device.messages.length > 0)).toBe(true);
    expectKinds(record, []);
  });

  it("holds each conversation on a device from its recorded cursor, else its joined event, else its first message", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.messages = device.messages.filter((delivered) => !(delivered.conversationId === group && delivered.seq === 1));
    // From the joined event (after seq 0): seq 1 is missing.
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe(`device bob/phone received conversation ${group} seqs 1..3 but not 1 of them: 1`);
    // A cursor at 1 wins over the joined event.
    device.conversationStarts = { [group]: 1 };
    expectKinds(record, []);
    // A live device that received neither cursor nor joined event starts before its first message.
    delete device.conversationStarts;
    delete device.startAfterSeq;
    device.events = [];
    expectKinds(record, []);
  });
});

describe("checkHistory: acked_but_lost", () => {
  it("reports an ack whose send is stored nowhere", () => {
    const record = clean();
    record.sends.push({
      senderUserId: "alice",
      senderDeviceId: "phone",
      conversationId: direct,
      clientMessageId: "c-lost",
      body: "into the void",
    });
    record.acks.push({ senderUserId: "alice", conversationId: direct, clientMessageId: "c-lost", messageId: "m-lost", seq: 4 });
    const report = expectKinds(record, ["acked_but_lost"]);
    expect(report.findings[0]?.detail).toContain("c-lost");
    expect(report.findings[0]?.detail).toContain("m-lost");
  });

  it("reports an ack whose send is stored with another seq than acked", () => {
    const record = clean();
    const ack = record.acks.find((candidate) => candidate.messageId === "m0");
    if (ack === undefined) throw new Error("no ack of m0");
    ack.seq = 9;
    const report = expectKinds(record, ["acked_but_lost"]);
    expect(report.findings[0]?.detail).toContain("holds message m0");
  });

  it("reports an ack whose send is stored with another messageId than acked", () => {
    const record = clean();
    rewriteMessage(record, "m3", { messageId: "m3-other" });
    const ack = record.acks.find((candidate) => candidate.clientMessageId === "c3");
    if (ack === undefined) throw new Error("no ack of c3");
    ack.messageId = "m3";
    expectKinds(record, ["acked_but_lost"]);
  });
});

describe("checkHistory: duplicate", () => {
  it("reports one send stored twice (and delivered twice)", () => {
    const record = clean();
    const twin: Message = { ...storedOf(record, "m3"), messageId: "m3-twin", seq: 4 };
    record.database.messages.push(twin);
    for (const userId of ["alice", "bob", "carol", "dave"])
      for (const device of devicesOf(record, userId)) device.messages.push({ conversationId: group, seq: 4, messageId: "m3-twin" });
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toContain("clientMessageId c3");
  });

  it("reports a device receiving one message twice", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    const first = device.messages[0];
    if (first === undefined) throw new Error("bob's phone received nothing");
    device.messages.push({ ...first });
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toBe(
      `device bob/phone received 1 messages of conversation ${direct} twice, or held already (it started after seq 0): seqs 1`,
    );
  });

  it("reports a device receiving messages it held before its start", () => {
    const record = clean();
    deviceOf(record, "bob", "phone").conversationStarts = { [direct]: 2 };
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toBe(
      `device bob/phone received 2 messages of conversation ${direct} twice, or held already (it started after seq 2): seqs 1..2`,
    );
  });

  it("reports a device receiving one mailbox event twice", () => {
    const record = clean();
    const device = deviceOf(record, "carol", "phone");
    const first = device.events[0];
    if (first === undefined) throw new Error("carol's phone received no event");
    device.events.push(first);
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toBe(
      "device carol/phone received 1 mailbox events twice, or held already (it started after seq 0): seqs 1",
    );
  });

  it("reports a mailbox holding one event id twice", () => {
    const record = clean();
    const receipt = mailboxOf(record, "carol").events.find((entry) => entry.event.kind === "receipt");
    if (receipt === undefined) throw new Error("carol holds no receipt");
    appendToMailbox(record, "carol", receipt.eventId, receipt.event);
    const report = expectKinds(record, ["duplicate"]);
    expect(details(report)).toContain(`mailbox of carol holds event ${receipt.eventId} 2 times, at seqs 2..3`);
  });

  it("reports a mailbox holding two joined events of one conversation", () => {
    const record = clean();
    const joined = mailboxOf(record, "bob").events.find((entry) => entry.event.kind === "joined" && entry.event.conversationId === group);
    if (joined === undefined) throw new Error("bob has no joined event of the group");
    appendToMailbox(record, "bob", joined.eventId, joined.event);
    const report = expectKinds(record, ["duplicate"]);
    expect(details(report)).toContain(`mailbox of bob holds 2 joined events of conversation ${group}, at seqs 2, 4`);
  });

  it("reports a member listed twice with different join points", () => {
    const record = clean();
    record.database.members.push({ conversationId: group, members: [{ userId: "dave", joinedAfterSeq: 0 }] });
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toBe(`user dave is a member of conversation ${group} 2 times, with join points 0, 2`);
  });
});

describe("checkHistory: reorder", () => {
  it("reports a device receiving one conversation's messages out of seq order", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    const [first, second, ...rest] = device.messages;
    if (first === undefined || second === undefined) throw new Error("bob's phone received too little");
    device.messages = [second, first, ...rest];
    const report = expectKinds(record, ["reorder"]);
    expect(report.findings[0]?.detail).toBe(`device bob/phone received 1 messages of conversation ${direct} out of order: seq 1 after 2`);
  });

  it("does not report messages of two conversations interleaved either way", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.messages = [
      ...device.messages.filter((delivered) => delivered.conversationId === group),
      ...device.messages.filter((delivered) => delivered.conversationId === direct),
    ];
    expectKinds(record, []);
  });

  it("reports a device receiving mailbox seqs out of order", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    const [first, second, ...rest] = device.events;
    if (first === undefined || second === undefined) throw new Error("bob's phone received too few events");
    device.events = [second, first, ...rest];
    const report = expectKinds(record, ["reorder"]);
    expect(report.findings[0]?.detail).toBe("device bob/phone received 1 mailbox events out of order: seq 1 after 2 (event 2)");
  });
});

describe("checkHistory: gap", () => {
  it("reports a conversation whose stored seqs skip one", () => {
    const record = clean();
    rewriteMessage(record, "m5", { seq: 4 });
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe(`conversation ${direct} (3 seqs stored) lacks 1 seqs: 3`);
  });

  it("reports a mailbox whose seqs skip one (and its devices, which skip it too)", () => {
    const record = clean();
    const mailbox = mailboxOf(record, "alice");
    mailbox.lastSeq = 4;
    mailbox.events = mailbox.events.map((entry) => (entry.seq === 3 ? { ...entry, seq: 4 } : entry));
    for (const device of devicesOf(record, "alice"))
      device.events = device.events.map((event) => (event.seq === 3 ? { ...event, seq: 4 } : event));
    const report = expectKinds(record, ["gap"]);
    expect(details(report)).toContain("mailbox of alice (floor 0, last 4) lacks 1 seqs: 3");
  });

  it("reports a device missing a message between its start and the last it received", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.messages = device.messages.filter((delivered) => delivered.messageId !== "m1");
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe(`device alice/laptop received conversation ${direct} seqs 1..3 but not 1 of them: 2`);
  });

  it("reports a device missing mailbox events after its start", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.events = device.events.filter((event) => event.seq !== 1);
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe("device alice/laptop received mailbox seqs 1..3 but not 1 of them: 1");
  });
});

describe("checkHistory: phantom", () => {
  it("reports a stored message that no send explains", () => {
    const record = clean();
    record.sends = record.sends.filter((send) => send.clientMessageId !== "c1");
    record.acks = record.acks.filter((ack) => ack.clientMessageId !== "c1");
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toContain("clientMessageId c1 was never sent");
  });

  it("reports a stored message whose body differs from what was sent", () => {
    const record = clean();
    rewriteMessage(record, "m3", { body: "from my laptop, edited by the server" });
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toContain("in body");
  });

  it("reports a delivered message that is stored nowhere", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.messages = device.messages.map((delivered) =>
      delivered.messageId === "m2" ? { ...delivered, messageId: "m-forged" } : delivered,
    );
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toBe(
      `message m-forged, held by 1 copy (device bob/phone conversation ${group} seq 1), is stored in no conversation`,
    );
  });

  it("reports a joined event whose afterSeq is not the member's join point", () => {
    const record = clean();
    memberOf(record, group, "dave").joinedAfterSeq = 1;
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toBe(
      `mailbox of dave seq 1: the joined event of conversation ${group} differs from its membership: afterSeq 2 where the member's join point is 1`,
    );
  });

  it("reports a joined event whose event id is not joined-<conversationId>", () => {
    const record = clean();
    const joined = mailboxOf(record, "dave").events.find((entry) => entry.event.kind === "joined");
    if (joined === undefined) throw new Error("dave has no joined event");
    joined.eventId = "joined-somewhere-else";
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toContain(`event id joined-somewhere-else where joined-${group} is due`);
  });

  it("reports a member whose join point is past its conversation's head", () => {
    const record = clean();
    memberOf(record, group, "dave").joinedAfterSeq = 7;
    for (const entry of mailboxOf(record, "dave").events) if (entry.event.kind === "joined") entry.event.afterSeq = 7;
    const device = deviceOf(record, "dave", "phone");
    for (const event of device.events) if (event.event.kind === "joined") event.event.afterSeq = 7;
    device.messages = [];
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toBe(
      `conversation ${group} (last stored seq 3) has 1 members joined past its head: dave after seq 7`,
    );
  });
});

describe("checkHistory: non_member_delivery", () => {
  it("reports a device receiving messages of a conversation its user is not in", () => {
    const record = clean();
    deviceOf(record, "dave", "phone").messages.push(
      ...["m0", "m1", "m5"].map((messageId) => ({ conversationId: direct, seq: storedOf(record, messageId).seq, messageId })),
    );
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings[0]?.detail).toBe(`user dave is not a member of conversation ${direct}, yet device phone received seqs 1..3`);
  });

  it("reports a mailbox holding a joined event of a conversation its user is not in", () => {
    const record = clean();
    appendToMailbox(record, "dave", `joined-${direct}`, joinedDirect(0));
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings[0]?.detail).toBe(
      `user dave is not a member of conversation ${direct}, yet its mailbox holds events of it at seqs 3`,
    );
  });

  it("reports a user who holds and wrote messages of a conversation whose members do not include it", () => {
    const record = clean();
    for (const entry of record.database.members) entry.members = entry.members.filter((member) => member.userId !== "carol");
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings).toHaveLength(1);
    expect(report.findings[0]?.detail).toBe(
      `user carol is not a member of conversation ${group}, yet it wrote messages m2; its mailbox holds events of it at seqs 1..2; device phone received seqs 1..3`,
    );
  });

  it("reports a message written before its sender joined", () => {
    const record = clean();
    // m2 (the group's seq 1) written by dave, who joined after seq 2.
    for (const send of record.sends)
      if (send.clientMessageId === "c2") Object.assign(send, { senderUserId: "dave", senderDeviceId: "phone" });
    for (const ack of record.acks) if (ack.clientMessageId === "c2") ack.senderUserId = "dave";
    rewriteMessage(record, "m2", { senderUserId: "dave", senderDeviceId: "phone" });
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings[0]?.detail).toBe(
      `user dave became a member of conversation ${group} only after its seq 2, yet it wrote messages m2`,
    );
  });
});

describe("checkHistory: missing_from_mailbox", () => {
  it("reports a member's mailbox lacking the joined event of its conversation when the run ended quiescent", () => {
    const record = clean();
    removeFromMailbox(record, "dave", 1);
    const report = expectKinds(record, ["missing_from_mailbox"]);
    expect(report.findings[0]?.detail).toBe(`user dave lacks the joined event of 1 of its 1 conversations: ${group}`);
  });

  it("does not report it while membership events may still be in flight", () => {
    const record = clean();
    removeFromMailbox(record, "dave", 1);
    record.expectComplete = false;
    expectKinds(record, []);
  });

  it("reports a member without a mailbox", () => {
    const record = clean();
    record.database.mailboxes = record.database.mailboxes.filter((mailbox) => mailbox.userId !== "carol");
    for (const device of devicesOf(record, "carol")) device.events = [];
    const report = expectKinds(record, ["missing_from_mailbox"]);
    expect(report.findings[0]?.detail).toBe(
      `user carol has no mailbox and so lacks the joined event of 1 of its 1 conversations: ${group}`,
    );
  });
});

describe("checkHistory: device_divergence", () => {
  it("reports a device that never received a conversation's tail when the run ended quiescent", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.messages = device.messages.filter((delivered) => delivered.messageId !== "m5");
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toBe(
      `device alice/laptop differs from the log of conversation ${direct} (last 3): it never received seqs 3 (it follows the conversation from after seq 0)`,
    );
    record.expectComplete = false;
    expectKinds(record, []);
  });

  it("reports a conversation a device follows by its cursor but received nothing of", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.messages = device.messages.filter((delivered) => delivered.conversationId !== direct);
    device.conversationStarts = { [direct]: 1 };
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toContain("it never received seqs 2..3 (it follows the conversation from after seq 1)");
  });

  it("reports a device holding another message at a seq than the conversation's log", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.messages = device.messages.map((delivered) => (delivered.messageId === "m1" ? { ...delivered, messageId: "m0" } : delivered));
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toBe(
      `device bob/phone differs from the log of conversation ${direct} (last 3): 1 seqs differ (seq 2 is message m0 on the device, m1 in its log)`,
    );
  });

  it("reports a device holding a mailbox event that differs from the stored one", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.events = device.events.map((event) =>
      event.seq === 2 && event.event.kind === "joined" ? { ...event, event: { ...event.event, title: "renamed" } } : event,
    );
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toBe("device bob/phone differs from the mailbox of bob (last 3): 1 events differ (seq 2 in title)");
  });

  it("reports an event of a kind the SDK did not know where the mailbox holds a known one", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.events = device.events.map((event) =>
      event.seq === 3 ? { seq: 3, event: { kind: "unknown", unknownKind: "reaction" } } : event,
    );
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toContain("seq 3 in kind (unknown reaction where receipt is stored)");
  });

  it("reports a device holding a mailbox seq its mailbox lacks, quiescent or not", () => {
    const record = clean();
    record.expectComplete = false;
    deviceOf(record, "bob", "phone").events.push({
      seq: 4,
      event: { kind: "receipt", conversationId: group, userId: "bob", readSeq: 1, deliveredSeq: 1 },
    });
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toContain("it holds seqs 4 that the mailbox lacks");
  });

  it("reports a device that never received its mailbox's tail when the run ended quiescent", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.events = device.events.slice(0, -1);
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toBe("device alice/laptop differs from the mailbox of alice (last 3): it never received seqs 3");
    record.expectComplete = false;
    expectKinds(record, []);
  });
});

describe("checkHistory: limits", () => {
  it("lists at most findingsListedMax findings and counts them all", () => {
    const messages: Message[] = Array.from({ length: findingsListedMax + 50 }, (_, index) => ({
      conversationId: group,
      messageId: `m${index}`,
      seq: index + 1,
      senderUserId: "alice",
      senderDeviceId: "phone",
      clientMessageId: `unsent${index}`,
      body: "never sent",
      sentAtMs: sentAtMsBase,
    }));
    const record: HistoryRecord = {
      sends: [],
      acks: [],
      deliveries: [],
      database: { messages, members: [{ conversationId: group, members: [{ userId: "alice", joinedAfterSeq: 0 }] }], mailboxes: [] },
      expectComplete: false,
    };
    const report = checkHistory(record);
    expect(report.ok).toBe(false);
    expect(report.findings).toHaveLength(findingsListedMax);
    expect(report.findingsTotal).toBe(findingsListedMax + 50);
    expect(report.counts.phantom).toBe(findingsListedMax + 50);
    expect(report.summary).toMatch(/^history check failed with 150 findings \(phantom 150\) in .*; first: phantom: stored message m0/);
  });

  it("names at most idsListedMax ranges in one finding and says how many more", () => {
    const record = clean();
    // Seqs 1, 2, 3, 5, 7, … 41 of the direct conversation: nineteen missing single seqs.
    const extra: Message[] = [];
    for (let seq = 5; seq <= 41; seq += 2)
      extra.push({ ...storedOf(record, "m0"), messageId: `gap${seq}`, clientMessageId: `gap${seq}`, seq });
    record.database.messages.push(...extra);
    for (const message of extra)
      record.sends.push({
        senderUserId: "alice",
        senderDeviceId: "phone",
        conversationId: direct,
        clientMessageId: message.clientMessageId,
        body: message.body,
      });
    record.expectComplete = false;
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe(
      `conversation ${direct} (22 seqs stored) lacks 19 seqs: 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 and ${19 - idsListedMax} more`,
    );
  });

  it("names at most idsListedMax ranges of a device's repeated seqs", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    // Every other seq of a long direct conversation, received twice.
    const extra: Message[] = [];
    for (let seq = 4; seq <= 60; seq++)
      extra.push({ ...storedOf(record, "m0"), messageId: `more${seq}`, clientMessageId: `more${seq}`, seq });
    record.database.messages.push(...extra);
    for (const message of extra)
      record.sends.push({
        senderUserId: "alice",
        senderDeviceId: "phone",
        conversationId: direct,
        clientMessageId: message.clientMessageId,
        body: message.body,
      });
    for (const message of extra) device.messages.push({ conversationId: direct, seq: message.seq, messageId: message.messageId });
    for (const message of extra)
      if (message.seq % 2 === 0) device.messages.push({ conversationId: direct, seq: message.seq, messageId: message.messageId });
    record.expectComplete = false;
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toBe(
      `device bob/phone received 29 messages of conversation ${direct} twice, or held already (it started after seq 0): seqs 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 and 19 more`,
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties

const userIds = ["u0", "u1", "u2", "u3", "u4"];

const scheduleArbitrary = fc.record({
  userCount: fc.integer({ min: 2, max: userIds.length }),
  deviceCounts: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: userIds.length, maxLength: userIds.length }),
  /** Each conversation's first members as a bit mask over the users (topped up to two members). */
  memberMasks: fc.array(fc.integer({ min: 0, max: 2 ** userIds.length - 1 }), { minLength: 1, maxLength: 3 }),
  actions: fc.array(
    fc.record({
      /** 0 to 2: a send; 3: a member added; 4: a receipt. */
      action: fc.integer({ min: 0, max: 4 }),
      conversationPick: fc.nat(),
      userPick: fc.nat(),
      devicePick: fc.nat(),
      body: fc.string({ minLength: 1, maxLength: 6 }),
      attempts: fc.integer({ min: 1, max: 2 }),
      acked: fc.boolean(),
      seqPick: fc.nat(),
    }),
    { minLength: 2, maxLength: 24 },
  ),
  /** Per device: where it starts and stops, whether it is live, its cursors and its conversation ends. */
  devicePicks: fc.array(fc.record({ start: fc.nat(), end: fc.nat(), live: fc.boolean(), cursor: fc.nat(), conversationEnd: fc.nat() }), {
    minLength: 10,
    maxLength: 10,
  }),
});
type Schedule = typeof scheduleArbitrary extends fc.Arbitrary<infer T> ? T : never;

/** `recordEveryStart`: no live device, so that dropping a device's first message or event is detectable. */
function scenarioOf(schedule: Schedule, expectComplete: boolean, recordEveryStart: boolean): Scenario {
  const users = userIds.slice(0, schedule.userCount).map((userId, index) => ({
    userId,
    deviceIds: ["d0", "d1"].slice(0, schedule.deviceCounts[index] ?? 1),
  }));
  const steps: Step[] = [];
  const conversations = schedule.memberMasks.map((mask, index) => {
    const members = users.filter((_, userIndex) => (mask & (1 << userIndex)) !== 0).map((user) => user.userId);
    for (const userId of ["u0", "u1"]) if (members.length < 2 && !members.includes(userId)) members.push(userId);
    const conversationId = `g-${String(index).padStart(22, "0")}`;
    steps.push({ kind: "create", conversationId, conversationKind: "group", title: `group ${index}`, memberUserIds: [...members] });
    return { conversationId, members, head: 0 };
  });
  for (const [index, action] of schedule.actions.entries()) {
    const conversation = conversations[action.conversationPick % conversations.length];
    if (conversation === undefined) throw new Error("no conversation");
    const { conversationId, members } = conversation;
    const userId = members[action.userPick % members.length] ?? "u0";
    if (action.action <= 2) {
      const deviceIds = users.find((user) => user.userId === userId)?.deviceIds ?? ["d0"];
      // Bodies are unique, so that swapping two sends' bodies is a fault.
      const body = `${action.body} #${index}`;
      steps.push({
        kind: "send",
        conversationId,
        senderUserId: userId,
        senderDeviceId: deviceIds[action.devicePick % deviceIds.length] ?? "d0",
        body,
        attempts: action.attempts,
        acked: action.acked,
      });
      conversation.head++;
    } else if (action.action === 3) {
      const outsiders = users.map((user) => user.userId).filter((candidate) => !members.includes(candidate));
      const added = outsiders[action.userPick % Math.max(1, outsiders.length)];
      if (added === undefined) continue;
      steps.push({ kind: "add", conversationId, addedByUserId: members[0] ?? "u0", userIds: [added] });
      members.push(added);
    } else {
      steps.push({ kind: "receipt", conversationId, userId, readSeq: action.seqPick % (conversation.head + 1) });
    }
  }
  const deviceOrder = users.flatMap((user) => user.deviceIds.map((deviceId) => `${user.userId}/${deviceId}`));
  return {
    users,
    steps,
    expectComplete,
    devices: (userId, deviceId, lastSeq) => {
      const pick = schedule.devicePicks[deviceOrder.indexOf(`${userId}/${deviceId}`)] ?? {
        start: 0,
        end: 0,
        live: false,
        cursor: 0,
        conversationEnd: 0,
      };
      const startAfterSeq = pick.start % (lastSeq + 1);
      return {
        startAfterSeq,
        live: !recordEveryStart && pick.live,
        endSeq: expectComplete ? lastSeq : startAfterSeq + (pick.end % (lastSeq - startAfterSeq + 1)),
        cursorOf: (joinedAfterSeq, head) => joinedAfterSeq + (pick.cursor % (head - joinedAfterSeq + 1)),
        endOf: (start, head) => (expectComplete ? head : start + (pick.conversationEnd % (head - start + 1))),
      };
    },
  };
}

/** Property runs: enough to meet every mutation on many shapes, few enough for a two-core machine. */
const numRuns = 300;

describe("checkHistory: properties", () => {
  it("passes every clean record, quiescent or not, with live devices or not", () => {
    fc.assert(
      fc.property(scheduleArbitrary, fc.boolean(), fc.boolean(), (schedule, expectComplete, recordEveryStart) => {
        const report = checkHistory(simulate(scenarioOf(schedule, expectComplete, recordEveryStart)));
        expect(report.findings).toEqual([]);
        expect(report.ok).toBe(true);
      }),
      { numRuns },
    );
  });

  const mutationNames = [
    "drop an acked stored message",
    "duplicate a stored message",
    "swap the seqs of an acked stored message and another of its conversation",
    "drop every attempt of one send",
    "swap the bodies of two sends",
    "swap the answers of two acks",
    "drop a member",
    "move a member's join point",
    "drop a mailbox event",
    "duplicate a mailbox event",
    "drop a device message",
    "duplicate a device message",
    "swap two device messages of one conversation",
    "point a device message at another stored message",
    "drop a device event",
    "duplicate a device event",
    "swap two device events",
  ] as const;
  type MutationName = (typeof mutationNames)[number];

  /** Applies one fault to a clean, quiescent record; false when this record offers no place for it. */
  function mutate(record: HistoryRecord, name: MutationName, pickA: number, pickB: number): boolean {
    const { database } = record;
    const at = <T>(list: readonly T[], pick: number): T | undefined => list[pick % Math.max(1, list.length)];
    const acked = (message: Message): boolean => record.acks.some((ack) => ack.messageId === message.messageId);
    const mailbox = at(
      database.mailboxes.filter((candidate) => candidate.events.length >= 1),
      pickA,
    );
    const messagesDevice = at(
      record.deliveries.filter((candidate) => candidate.messages.length >= 1),
      pickA,
    );
    const eventsDevice = at(
      record.deliveries.filter((candidate) => candidate.events.length >= 1),
      pickA,
    );
    switch (name) {
      case "drop an acked stored message": {
        const message = at(database.messages.filter(acked), pickA);
        if (message === undefined) return false;
        database.messages.splice(database.messages.indexOf(message), 1);
        return true;
      }
      case "duplicate a stored message": {
        const message = at(database.messages, pickA);
        if (message === undefined) return false;
        database.messages.splice(pickB % (database.messages.length + 1), 0, { ...message });
        return true;
      }
      case "swap the seqs of an acked stored message and another of its conversation": {
        const first = at(database.messages.filter(acked), pickA);
        const others = database.messages.filter((message) => message.conversationId === first?.conversationId && message !== first);
        const second = at(others, pickB);
        if (first === undefined || second === undefined) return false;
        [first.seq, second.seq] = [second.seq, first.seq];
        return true;
      }
      case "drop every attempt of one send": {
        const send = at(record.sends, pickA);
        if (send === undefined) return false;
        record.sends = record.sends.filter((candidate) => candidate.clientMessageId !== send.clientMessageId);
        return true;
      }
      case "swap the bodies of two sends": {
        // Every attempt of each: one retry with another body is no fault while an attempt matches the store.
        const first = at(record.sends, pickA);
        const second = at(
          record.sends.filter((send) => send.clientMessageId !== first?.clientMessageId),
          pickB,
        );
        if (first === undefined || second === undefined) return false;
        const [firstId, secondId, firstBody, secondBody] = [first.clientMessageId, second.clientMessageId, first.body, second.body];
        for (const send of record.sends) {
          if (send.clientMessageId === firstId) send.body = secondBody;
          else if (send.clientMessageId === secondId) send.body = firstBody;
        }
        return true;
      }
      case "swap the answers of two acks": {
        const first = at(record.acks, pickA);
        const second = at(
          record.acks.filter((ack) => ack.messageId !== first?.messageId),
          pickB,
        );
        if (first === undefined || second === undefined) return false;
        [first.messageId, second.messageId, first.seq, second.seq] = [second.messageId, first.messageId, second.seq, first.seq];
        return true;
      }
      case "drop a member": {
        // Its mailbox still holds the joined event.
        const entry = at(database.members, pickA);
        if (entry === undefined || entry.members.length === 0) return false;
        entry.members.splice(pickB % entry.members.length, 1);
        return true;
      }
      case "move a member's join point": {
        const members = at(database.members, pickA)?.members ?? [];
        const member = at(members, pickB);
        if (member === undefined) return false;
        member.joinedAfterSeq++;
        return true;
      }
      case "drop a mailbox event": {
        if (mailbox === undefined) return false;
        mailbox.events.splice(pickB % mailbox.events.length, 1);
        return true;
      }
      case "duplicate a mailbox event": {
        const entry = mailbox === undefined ? undefined : at(mailbox.events, pickB);
        if (mailbox === undefined || entry === undefined) return false;
        mailbox.events.splice(pickA % (mailbox.events.length + 1), 0, { ...entry });
        return true;
      }
      case "drop a device message": {
        if (messagesDevice === undefined) return false;
        messagesDevice.messages.splice(pickB % messagesDevice.messages.length, 1);
        return true;
      }
      case "duplicate a device message": {
        const delivered = messagesDevice === undefined ? undefined : at(messagesDevice.messages, pickB);
        if (messagesDevice === undefined || delivered === undefined) return false;
        messagesDevice.messages.splice(pickA % (messagesDevice.messages.length + 1), 0, { ...delivered });
        return true;
      }
      case "swap two device messages of one conversation": {
        // Two messages of different conversations may come in either order: swapping those is no fault.
        const device = at(
          record.deliveries.filter((candidate) =>
            candidate.messages.some(
              (delivered, position) =>
                candidate.messages.findIndex((other) => other.conversationId === delivered.conversationId) !== position,
            ),
          ),
          pickA,
        );
        if (device === undefined) return false;
        const first = at(device.messages, pickB);
        const sameConversation = device.messages.filter(
          (delivered) => delivered !== first && delivered.conversationId === first?.conversationId,
        );
        const second = at(sameConversation, pickA);
        if (first === undefined || second === undefined) return false;
        const [firstAt, secondAt] = [device.messages.indexOf(first), device.messages.indexOf(second)];
        [device.messages[firstAt], device.messages[secondAt]] = [second, first];
        return true;
      }
      case "point a device message at another stored message": {
        const delivered = messagesDevice === undefined ? undefined : at(messagesDevice.messages, pickB);
        const other = at(
          database.messages.filter((message) => message.messageId !== delivered?.messageId),
          pickA,
        );
        if (delivered === undefined || other === undefined) return false;
        delivered.messageId = other.messageId;
        return true;
      }
      case "drop a device event": {
        if (eventsDevice === undefined) return false;
        eventsDevice.events.splice(pickB % eventsDevice.events.length, 1);
        return true;
      }
      case "duplicate a device event": {
        const event = eventsDevice === undefined ? undefined : at(eventsDevice.events, pickB);
        if (eventsDevice === undefined || event === undefined) return false;
        eventsDevice.events.splice(pickA % (eventsDevice.events.length + 1), 0, { ...event });
        return true;
      }
      case "swap two device events": {
        const swapped = at(
          record.deliveries.filter((candidate) => candidate.events.length >= 2),
          pickA,
        );
        if (swapped === undefined) return false;
        const first = pickB % swapped.events.length;
        const second = (first + 1 + (pickA % (swapped.events.length - 1))) % swapped.events.length;
        const [left, right] = [swapped.events[first], swapped.events[second]];
        if (left === undefined || right === undefined) return false;
        [swapped.events[first], swapped.events[second]] = [right, left];
        return true;
      }
    }
  }

  it("detects dropping, duplicating or swapping any one element of a clean record", () => {
    const applied = new Set<MutationName>();
    fc.assert(
      fc.property(scheduleArbitrary, fc.constantFrom(...mutationNames), fc.nat(), fc.nat(), (schedule, name, pickA, pickB) => {
        const record = simulate(scenarioOf(schedule, true, true));
        fc.pre(mutate(record, name, pickA, pickB));
        applied.add(name);
        const report = checkHistory(record);
        expect(report.ok, `"${name}" went undetected`).toBe(false);
        expect(report.findingsTotal).toBeGreaterThan(0);
      }),
      { numRuns },
    );
    // Every fault was planted at least once: a mutation that never applies would prove nothing.
    expect([...applied].sort()).toEqual([...mutationNames].sort());
  });
});
