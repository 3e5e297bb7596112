// The history checker against records built by a small simulation of a correct Cellwire (simulate): a
// clean record passes; each test then plants one fault and expects exactly the kinds that fault breaks.
// The properties run the simulation on random schedules (fast-check prints the seed and the shrunk
// schedule on failure).
import fc from "fast-check";
import type { Message } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import { checkHistory, findingsListedMax, idsListedMax, type CheckReport, type FindingKind, type HistoryRecord } from "./history-checker.ts";

// ---------------------------------------------------------------------------------------------------
// A correct Cellwire, simulated: each send is stored once with the next conversation seq, fanned out to
// every member's mailbox in order, and each device receives its user's mailbox from where it started.

type Scenario = {
  users: { userId: string; deviceIds: string[] }[];
  conversations: { conversationId: string; memberUserIds: string[] }[];
  sends: { conversationId: string; senderUserId: string; senderDeviceId: string; body: string; attempts: number; acked: boolean }[];
  expectComplete: boolean;
  /** Where each device starts and stops in its mailbox (default: the whole mailbox, start recorded as 0). */
  devices?: (userId: string, deviceId: string, mailboxLastSeq: number) => { startAfterSeq: number; recordStart: boolean; endSeq: number };
};

const sentAtMsBase = 1_700_000_000_000;

function simulate(scenario: Scenario): HistoryRecord {
  const record: HistoryRecord = { sends: [], acks: [], deliveries: [], database: { messages: [], members: [], mailboxes: [] }, expectComplete: scenario.expectComplete };
  const lastSeqByConversation = new Map<string, number>();
  const mailboxes = new Map(scenario.users.map((user) => [user.userId, { userId: user.userId, lastSeq: 0, floorSeq: 0, events: [] as { seq: number; eventId: string; message: Message }[] }]));
  for (const conversation of scenario.conversations) {
    record.database.members.push({ conversationId: conversation.conversationId, userIds: [...conversation.memberUserIds] });
  }
  for (const [index, send] of scenario.sends.entries()) {
    const clientMessageId = `c${index}`;
    const seq = (lastSeqByConversation.get(send.conversationId) ?? 0) + 1;
    lastSeqByConversation.set(send.conversationId, seq);
    const message: Message = {
      conversationId: send.conversationId,
      messageId: `m${index}`,
      seq,
      senderUserId: send.senderUserId,
      senderDeviceId: send.senderDeviceId,
      clientMessageId,
      body: send.body,
      sentAtMs: sentAtMsBase + index,
    };
    record.database.messages.push(message);
    for (let attempt = 0; attempt < send.attempts; attempt++) {
      record.sends.push({ senderUserId: send.senderUserId, senderDeviceId: send.senderDeviceId, conversationId: send.conversationId, clientMessageId, body: send.body });
      // Each attempt of a retried send is acked with the same answer.
      if (send.acked) record.acks.push({ senderUserId: send.senderUserId, conversationId: send.conversationId, clientMessageId, messageId: message.messageId, seq });
    }
    const members = scenario.conversations.find((conversation) => conversation.conversationId === send.conversationId)?.memberUserIds ?? [];
    for (const userId of members) {
      const mailbox = mailboxes.get(userId);
      if (mailbox === undefined) throw new Error(`scenario: ${userId} is not a user`);
      mailbox.lastSeq++;
      mailbox.events.push({ seq: mailbox.lastSeq, eventId: `${message.messageId}-${userId}`, message: { ...message } });
    }
  }
  record.database.mailboxes = [...mailboxes.values()];
  for (const user of scenario.users) {
    const mailbox = mailboxes.get(user.userId);
    if (mailbox === undefined) continue;
    for (const deviceId of user.deviceIds) {
      const view = scenario.devices?.(user.userId, deviceId, mailbox.lastSeq) ?? { startAfterSeq: 0, recordStart: true, endSeq: mailbox.lastSeq };
      const events = mailbox.events.filter((event) => event.seq > view.startAfterSeq && event.seq <= view.endSeq).map((event) => ({ seq: event.seq, message: { ...event.message } }));
      record.deliveries.push({ userId: user.userId, deviceId, ...(view.recordStart ? { startAfterSeq: view.startAfterSeq } : {}), events });
    }
  }
  return record;
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
    conversations: [
      { conversationId: direct, memberUserIds: ["alice", "bob"] },
      { conversationId: group, memberUserIds: ["alice", "bob", "carol"] },
    ],
    // m0..m5. The direct conversation holds m0 (seq 1), m1 (2), m5 (3); the group m2 (1), m3 (2), m4 (3).
    // Mailboxes: alice and bob m0..m5 at seqs 1..6; carol m2, m3, m4 at 1..3; dave none.
    sends: [
      { conversationId: direct, senderUserId: "alice", senderDeviceId: "phone", body: "hi bob", attempts: 1, acked: true },
      { conversationId: direct, senderUserId: "bob", senderDeviceId: "phone", body: "hi alice", attempts: 1, acked: true },
      { conversationId: group, senderUserId: "carol", senderDeviceId: "phone", body: "hello all", attempts: 2, acked: true },
      { conversationId: group, senderUserId: "alice", senderDeviceId: "laptop", body: "from my laptop", attempts: 1, acked: true },
      { conversationId: group, senderUserId: "bob", senderDeviceId: "phone", body: "ack lost", attempts: 1, acked: false },
      { conversationId: direct, senderUserId: "alice", senderDeviceId: "phone", body: "last one", attempts: 1, acked: true },
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

/** Changes a message everywhere it appears (stored, acks, mailboxes, devices), as a consistent system would. */
function rewriteMessage(record: HistoryRecord, messageId: string, change: Partial<Message>): void {
  const rewrite = (message: Message): Message => (message.messageId === messageId ? { ...message, ...change } : message);
  record.database.messages = record.database.messages.map(rewrite);
  for (const ack of record.acks) if (ack.messageId === messageId && change.seq !== undefined) ack.seq = change.seq;
  for (const mailbox of record.database.mailboxes) mailbox.events = mailbox.events.map((event) => ({ ...event, message: rewrite(event.message) }));
  for (const device of record.deliveries) device.events = device.events.map((event) => ({ ...event, message: rewrite(event.message) }));
}

/** Takes a message out of a user's mailbox and renumbers the events after it, on its devices too. */
function removeFromMailbox(record: HistoryRecord, userId: string, messageId: string): void {
  const mailbox = mailboxOf(record, userId);
  const removed = mailbox.events.find((event) => event.message.messageId === messageId);
  if (removed === undefined) throw new Error(`${userId}'s mailbox lacks ${messageId}`);
  const renumber = <T extends { seq: number; message: Message }>(events: T[]): T[] =>
    events.filter((event) => event.message.messageId !== messageId).map((event) => (event.seq > removed.seq ? { ...event, seq: event.seq - 1 } : event));
  mailbox.events = renumber(mailbox.events);
  mailbox.lastSeq--;
  for (const device of devicesOf(record, userId)) device.events = renumber(device.events);
}

/** Appends a message to users' mailboxes at their next seq, and to each of their devices. */
function appendToMailboxes(record: HistoryRecord, message: Message, userIds: string[]): void {
  for (const userId of userIds) {
    const mailbox = mailboxOf(record, userId);
    mailbox.lastSeq++;
    mailbox.events.push({ seq: mailbox.lastSeq, eventId: `${message.messageId}-${userId}-again`, message: { ...message } });
    for (const device of devicesOf(record, userId)) device.events.push({ seq: mailbox.lastSeq, message: { ...message } });
  }
}

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

  it("passes when the run is not quiescent and devices stopped short of their mailbox's head", () => {
    const record = simulate({ ...scenario(), expectComplete: false, devices: (_user, _device, lastSeq) => ({ startAfterSeq: 1, recordStart: false, endSeq: Math.max(1, lastSeq - 2) }) });
    expectKinds(record, []);
  });
});

describe("checkHistory: acked_but_lost", () => {
  it("reports an ack whose send is stored nowhere", () => {
    const record = clean();
    record.sends.push({ senderUserId: "alice", senderDeviceId: "phone", conversationId: direct, clientMessageId: "c-lost", body: "into the void" });
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
  it("reports one send stored twice (and fanned out twice)", () => {
    const record = clean();
    const twin: Message = { ...storedOf(record, "m3"), messageId: "m3-twin", seq: 4 };
    record.database.messages.push(twin);
    appendToMailboxes(record, twin, ["alice", "bob", "carol"]);
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings[0]?.detail).toContain("clientMessageId c3");
  });

  it("reports a device receiving one message twice", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    const first = device.events[0];
    if (first === undefined) throw new Error("bob's phone received nothing");
    device.events.push({ ...first });
    expectKinds(record, ["duplicate"]);
  });

  it("reports a mailbox holding one message twice", () => {
    const record = clean();
    appendToMailboxes(record, storedOf(record, "m0"), ["alice"]);
    const report = expectKinds(record, ["duplicate"]);
    expect(report.findings.map((finding) => finding.detail)).toContain("mailbox of alice holds message m0 2 times, at seqs 1, 7");
  });
});

describe("checkHistory: reorder", () => {
  it("reports a device receiving mailbox seqs out of order", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    const [first, second, third, ...rest] = device.events;
    if (first === undefined || second === undefined || third === undefined) throw new Error("bob's phone received too little");
    device.events = [first, third, second, ...rest];
    const report = expectKinds(record, ["reorder"]);
    expect(report.findings[0]?.detail).toContain("mailbox seq 2 after 3");
  });

  it("reports a mailbox (and its devices) holding one conversation's messages out of seq order", () => {
    const record = clean();
    // bob's mailbox seqs 1 and 2 hold the direct conversation's seqs 1 and 2: swap them.
    const swap = <T extends { seq: number }>(events: T[]): T[] =>
      events.map((event) => (event.seq === 1 ? { ...event, seq: 2 } : event.seq === 2 ? { ...event, seq: 1 } : event)).sort((left, right) => left.seq - right.seq);
    mailboxOf(record, "bob").events = swap(mailboxOf(record, "bob").events);
    deviceOf(record, "bob", "phone").events = swap(deviceOf(record, "bob", "phone").events);
    const report = expectKinds(record, ["reorder"]);
    expect(report.findings.map((finding) => finding.detail).join("\n")).toContain(`conversation ${direct} seq 1 at mailbox seq 2 after its seq 2`);
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
    mailbox.lastSeq = 7;
    mailbox.events = mailbox.events.map((event) => (event.seq === 6 ? { ...event, seq: 7 } : event));
    for (const device of devicesOf(record, "alice")) device.events = device.events.map((event) => (event.seq === 6 ? { ...event, seq: 7 } : event));
    const report = expectKinds(record, ["gap"]);
    expect(report.findings.map((finding) => finding.detail)).toContain("mailbox of alice (floor 0, last 7) lacks 1 seqs: 6");
  });

  it("reports a device missing an event between its first and last", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.events = device.events.filter((event) => event.seq !== 3);
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe("device alice/laptop received mailbox seqs 1..6 but not 1 of them: 3");
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

  it("reports a delivered copy that differs from the stored message", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.events = device.events.map((event) => (event.message.messageId === "m2" ? { ...event, message: { ...event.message, body: "tampered" } } : event));
    const report = expectKinds(record, ["phantom"]);
    expect(report.findings[0]?.detail).toContain("message m2, held by 1 copy (device bob/phone mailbox seq 3), differs from the stored copy in body");
  });
});

describe("checkHistory: non_member_delivery", () => {
  it("reports a mailbox and a device holding a message of a conversation the user is not in", () => {
    const record = clean();
    appendToMailboxes(record, storedOf(record, "m2"), ["dave"]);
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings[0]?.detail).toBe(
      `user dave is not a member of conversation ${group}, yet its mailbox holds 1 of its messages (m2); device phone received 1 of its messages (m2)`,
    );
  });

  it("reports a user who holds and wrote messages of a conversation whose members do not include it", () => {
    const record = clean();
    record.database.members = record.database.members.map((entry) => ({ ...entry, userIds: entry.userIds.filter((userId) => userId !== "carol") }));
    const report = expectKinds(record, ["non_member_delivery"]);
    expect(report.findings[0]?.detail).toContain("it wrote 1 of its messages (m2)");
  });
});

describe("checkHistory: missing_from_mailbox", () => {
  it("reports a member's mailbox lacking a message of its conversation when the run ended quiescent", () => {
    const record = clean();
    removeFromMailbox(record, "carol", "m3");
    const report = expectKinds(record, ["missing_from_mailbox"]);
    expect(report.findings[0]?.detail).toBe(`user carol, a member of conversation ${group}, lacks 1 of its 3 stored messages: seqs 2 (m3)`);
  });

  it("does not report it while fan-out may still be in flight", () => {
    const record = clean();
    removeFromMailbox(record, "carol", "m3");
    record.expectComplete = false;
    expectKinds(record, []);
  });
});

describe("checkHistory: device_divergence", () => {
  it("reports a device that never received its mailbox's tail when the run ended quiescent", () => {
    const record = clean();
    const device = deviceOf(record, "alice", "laptop");
    device.events = device.events.slice(0, -1);
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toBe("device alice/laptop differs from the mailbox of alice (last 6): it never received seqs 6");
    record.expectComplete = false;
    expectKinds(record, []);
  });

  it("reports a device holding an event its mailbox does not, quiescent or not", () => {
    const record = clean();
    record.expectComplete = false;
    record.sends.push({ senderUserId: "bob", senderDeviceId: "phone", conversationId: direct, clientMessageId: "c-extra", body: "extra" });
    const extra: Message = { ...storedOf(record, "m1"), messageId: "m-extra", clientMessageId: "c-extra", body: "extra", seq: 4 };
    record.database.messages.push(extra);
    deviceOf(record, "alice", "laptop").events.push({ seq: 7, message: extra });
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toContain("it holds seqs 7 that the mailbox lacks");
  });

  it("holds a device to the seqs after its recorded start, or after its first event when none is recorded", () => {
    const record = clean();
    const device = deviceOf(record, "bob", "phone");
    device.events = device.events.filter((event) => event.seq > 2);
    device.startAfterSeq = 0;
    const report = expectKinds(record, ["device_divergence"]);
    expect(report.findings[0]?.detail).toContain("it never received seqs 1..2");
    device.startAfterSeq = 2;
    expectKinds(record, []);
    delete device.startAfterSeq;
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
    const record: HistoryRecord = { sends: [], acks: [], deliveries: [], database: { messages, members: [{ conversationId: group, userIds: ["alice"] }], mailboxes: [] }, expectComplete: false };
    const report = checkHistory(record);
    expect(report.ok).toBe(false);
    expect(report.findings).toHaveLength(findingsListedMax);
    expect(report.findingsTotal).toBe(findingsListedMax + 50);
    expect(report.counts.phantom).toBe(findingsListedMax + 50);
    expect(report.summary).toMatch(/^history check failed with 150 findings \(phantom 150\) in .*; first: phantom: stored message m0/);
  });

  it("names at most idsListedMax ranges in one finding and says how many more", () => {
    const record = clean();
    // Seqs 1, 3, 5, … 41 of the direct conversation: twenty missing single seqs.
    const extra: Message[] = [];
    for (let seq = 5; seq <= 41; seq += 2) extra.push({ ...storedOf(record, "m0"), messageId: `gap${seq}`, clientMessageId: `gap${seq}`, seq });
    record.database.messages.push(...extra);
    for (const message of extra) record.sends.push({ senderUserId: "alice", senderDeviceId: "phone", conversationId: direct, clientMessageId: message.clientMessageId, body: message.body });
    record.expectComplete = false;
    const report = expectKinds(record, ["gap"]);
    expect(report.findings[0]?.detail).toBe(`conversation ${direct} (22 seqs stored) lacks 19 seqs: 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 and ${19 - idsListedMax} more`);
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties

const userIds = ["u0", "u1", "u2", "u3", "u4"];

const scheduleArbitrary = fc.record({
  userCount: fc.integer({ min: 2, max: userIds.length }),
  deviceCounts: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: userIds.length, maxLength: userIds.length }),
  /** Each conversation's members as a bit mask over the users (topped up to two members). */
  memberMasks: fc.array(fc.integer({ min: 0, max: 2 ** userIds.length - 1 }), { minLength: 1, maxLength: 3 }),
  sends: fc.array(
    fc.record({
      conversationPick: fc.nat(),
      senderPick: fc.nat(),
      devicePick: fc.nat(),
      body: fc.string({ minLength: 1, maxLength: 6 }),
      attempts: fc.integer({ min: 1, max: 2 }),
      acked: fc.boolean(),
    }),
    { minLength: 2, maxLength: 24 },
  ),
  /** Per device: where it starts, where it stops (incomplete runs), whether its start is recorded. */
  devicePicks: fc.array(fc.record({ start: fc.nat(), end: fc.nat(), recordStart: fc.boolean() }), { minLength: 10, maxLength: 10 }),
});
type Schedule = typeof scheduleArbitrary extends fc.Arbitrary<infer T> ? T : never;

function scenarioOf(schedule: Schedule, expectComplete: boolean): Scenario {
  const users = userIds.slice(0, schedule.userCount).map((userId, index) => ({
    userId,
    deviceIds: ["d0", "d1"].slice(0, schedule.deviceCounts[index] ?? 1),
  }));
  const conversations = schedule.memberMasks.map((mask, index) => {
    const members = users.filter((_, userIndex) => (mask & (1 << userIndex)) !== 0).map((user) => user.userId);
    for (const userId of ["u0", "u1"]) if (members.length < 2 && !members.includes(userId)) members.push(userId);
    return { conversationId: `g-${String(index).padStart(22, "0")}`, memberUserIds: members };
  });
  const sends = schedule.sends.map((send, index) => {
    const conversation = conversations[send.conversationPick % conversations.length];
    if (conversation === undefined) throw new Error("no conversation");
    const senderUserId = conversation.memberUserIds[send.senderPick % conversation.memberUserIds.length] ?? "u0";
    const deviceIds = users.find((user) => user.userId === senderUserId)?.deviceIds ?? ["d0"];
    return {
      conversationId: conversation.conversationId,
      senderUserId,
      senderDeviceId: deviceIds[send.devicePick % deviceIds.length] ?? "d0",
      // Bodies are unique, so that swapping two sends' bodies is a fault.
      body: `${send.body} #${index}`,
      attempts: send.attempts,
      acked: send.acked,
    };
  });
  const deviceOrder = users.flatMap((user) => user.deviceIds.map((deviceId) => `${user.userId}/${deviceId}`));
  return {
    users,
    conversations,
    sends,
    expectComplete,
    devices: (userId, deviceId, lastSeq) => {
      const pick = schedule.devicePicks[deviceOrder.indexOf(`${userId}/${deviceId}`)] ?? { start: 0, end: 0, recordStart: true };
      const startAfterSeq = pick.start % (lastSeq + 1);
      const endSeq = expectComplete ? lastSeq : startAfterSeq + (pick.end % (lastSeq - startAfterSeq + 1));
      // A complete run records every start: a device's first event cannot be checked without it.
      return { startAfterSeq, recordStart: expectComplete || pick.recordStart, endSeq };
    },
  };
}

/** Property runs: enough to meet every mutation on many shapes, few enough for a two-core machine. */
const numRuns = 300;

describe("checkHistory: properties", () => {
  it("passes every clean record, quiescent or not", () => {
    fc.assert(
      fc.property(scheduleArbitrary, fc.boolean(), (schedule, expectComplete) => {
        const report = checkHistory(simulate(scenarioOf(schedule, expectComplete)));
        expect(report.findings).toEqual([]);
        expect(report.ok).toBe(true);
      }),
      { numRuns },
    );
  });

  const mutationNames = [
    "drop a stored message",
    "duplicate a stored message",
    "swap the seqs of two stored messages of one conversation",
    "drop every attempt of one send",
    "swap the bodies of two sends",
    "swap the answers of two acks",
    "drop a member of a conversation with messages",
    "drop a mailbox event",
    "duplicate a mailbox event",
    "swap two mailbox events of one conversation",
    "drop a device event",
    "duplicate a device event",
    "swap two device events",
  ] as const;
  type MutationName = (typeof mutationNames)[number];

  /** Applies one fault to a clean, quiescent record; false when this record offers no place for it. */
  function mutate(record: HistoryRecord, name: MutationName, pickA: number, pickB: number): boolean {
    const { database } = record;
    const at = <T>(list: readonly T[], pick: number): T | undefined => list[pick % Math.max(1, list.length)];
    const mailbox = at(database.mailboxes.filter((candidate) => candidate.events.length >= 2), pickA);
    const device = at(record.deliveries.filter((candidate) => candidate.events.length >= 1), pickA);
    switch (name) {
      case "drop a stored message": {
        database.messages.splice(pickA % database.messages.length, 1);
        return true;
      }
      case "duplicate a stored message": {
        const message = at(database.messages, pickA);
        if (message === undefined) return false;
        database.messages.splice(pickB % (database.messages.length + 1), 0, { ...message });
        return true;
      }
      case "swap the seqs of two stored messages of one conversation": {
        const first = at(database.messages, pickA);
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
        const second = at(record.sends.filter((send) => send.clientMessageId !== first?.clientMessageId), pickB);
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
        const second = at(record.acks.filter((ack) => ack.messageId !== first?.messageId), pickB);
        if (first === undefined || second === undefined) return false;
        [first.messageId, second.messageId, first.seq, second.seq] = [second.messageId, first.messageId, second.seq, first.seq];
        return true;
      }
      case "drop a member of a conversation with messages": {
        const entry = at(database.members.filter((candidate) => database.messages.some((message) => message.conversationId === candidate.conversationId)), pickA);
        if (entry === undefined) return false;
        entry.userIds.splice(pickB % entry.userIds.length, 1);
        return true;
      }
      case "drop a mailbox event": {
        if (mailbox === undefined) return false;
        mailbox.events.splice(pickB % mailbox.events.length, 1);
        return true;
      }
      case "duplicate a mailbox event": {
        const event = mailbox === undefined ? undefined : at(mailbox.events, pickB);
        if (mailbox === undefined || event === undefined) return false;
        mailbox.events.splice(pickA % (mailbox.events.length + 1), 0, { ...event });
        return true;
      }
      case "swap two mailbox events of one conversation": {
        // Two events of different conversations may come in either order: swapping those is no fault.
        const first = mailbox === undefined ? undefined : at(mailbox.events, pickB);
        const second = at(mailbox?.events.filter((event) => event !== first && event.message.conversationId === first?.message.conversationId) ?? [], pickA);
        if (first === undefined || second === undefined) return false;
        [first.message, second.message] = [second.message, first.message];
        return true;
      }
      case "drop a device event": {
        if (device === undefined) return false;
        device.events.splice(pickB % device.events.length, 1);
        return true;
      }
      case "duplicate a device event": {
        const event = device === undefined ? undefined : at(device.events, pickB);
        if (device === undefined || event === undefined) return false;
        device.events.splice(pickA % (device.events.length + 1), 0, { ...event });
        return true;
      }
      case "swap two device events": {
        const swapped = at(record.deliveries.filter((candidate) => candidate.events.length >= 2), pickA);
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
        const record = simulate(scenarioOf(schedule, true));
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
