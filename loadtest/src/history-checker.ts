// The history checker: given what the clients of a run attempted and received and what the cell databases
// hold at its end, it names every broken promise of docs/architecture.md as docs/decisions/0009 restates
// them: one order per conversation, acked messages kept, gapless mailboxes holding each membership once,
// and every device receiving each conversation it follows from its start point, gapless and once. Pure:
// the caller gathers the record (database-dump.ts reads the databases), so tests can plant one fault in a
// hand-made record and see it reported.
//
// A send is identified as the cells' unique constraint identifies it: (conversation, sender,
// clientMessageId), so the same clientMessageId sent to two conversations is two sends.
//
// Copies on devices are compared by messageId only. A device's record holds, per message it received,
// the conversation, the seq and the messageId (DeliveredMessage), not the body: a benchmark delivers
// millions of messages, and the stored message is checked in full once, against the sends. A device that
// received the right messageId at the right seq with a corrupted body is therefore not caught here.
// Mailbox events are few and are compared field by field.
//
// What the checker assumes of the run it is given:
// - Membership only grows. A member is held to the messages after its join point (the conversation's last
//   seq when it joined), so members may be added mid-run.
// - Each session of a device after its first resumes from what the device holds (the mailbox and every
//   conversation it follows), as the client SDK does; a session started live would skip seqs, which reads
//   as a gap.
// - No device was resynced (`resync` frame: its events were cut by retention); a resync also skips seqs.
//   Retention is not built yet.
import type { MailboxEvent, Message, UnknownMailboxEvent } from "@cellwire/protocol";

// ---------------------------------------------------------------------------------------------------
// The record: plain mutable data, so that a test or a load script can fill it in as the run goes.

/** One send frame as a client wrote it; a retry is one more entry with the same clientMessageId. */
export type SendRecord = {
  senderUserId: string;
  senderDeviceId: string;
  conversationId: string;
  clientMessageId: string;
  body: string;
};

/** One ack a client received. */
export type AckRecord = {
  senderUserId: string;
  conversationId: string;
  clientMessageId: string;
  messageId: string;
  seq: number;
};

/**
 * One `message` frame a device received, reduced to what places it: its conversation, its seq there and
 * its messageId (the checker compares copies by messageId only, see the top of this file). A full
 * Message is one too, at the cost of its memory.
 */
export type DeliveredMessage = { conversationId: string; seq: number; messageId: string };

/** One `event` frame: `seq` is the user's mailbox seq; the event as the SDK emits it (an unknown kind included). */
export type DeliveredEvent = { seq: number; event: MailboxEvent | UnknownMailboxEvent };

/**
 * Everything one device received over the run, in arrival order, across all its sessions, and where it
 * started. One entry per device.
 *
 * `startAfterSeq` is the resumeAfterSeq of the device's first hello of the run (0 for a device that asked
 * for the whole mailbox): events up to it were never due to this device. When absent (a device that
 * started live at the head), the device is taken to start just before the first event it received, so a
 * device that never received an event is not held to any: record it to check more.
 *
 * `conversationStarts` holds the cursors of the device's first hello (the SDK's resumeConversations):
 * conversation → the seq of the last message it held. A conversation without one starts at the join
 * point of its `joined` event when the device received one, else just before the first message of it
 * the device received (a live session). A conversation with none of these is not checked on the device.
 */
export type DeviceDeliveries = {
  userId: string;
  deviceId: string;
  startAfterSeq?: number;
  conversationStarts?: Readonly<Record<string, number>>;
  /** Its `message` frames, every conversation together. */
  messages: DeliveredMessage[];
  /** Its `event` frames. */
  events: DeliveredEvent[];
};

/** `joinedAfterSeq`: the member's join point, the conversation's last seq when the user joined (0 for a new conversation). */
export type ConversationMember = { userId: string; joinedAfterSeq: number };

export type ConversationMembers = { conversationId: string; members: ConversationMember[] };

/** A stored mailbox event: its seq, its idempotency key (`joined-<conversationId>` for a joined event) and the event. */
export type MailboxEntry = { seq: number; eventId: string; event: MailboxEvent };

/**
 * A user's mailbox as stored: `lastSeq` is its head, `floorSeq` the last seq cut by retention (0 when none
 * was), so its events are exactly floorSeq+1..lastSeq.
 */
export type StoredMailbox = {
  userId: string;
  lastSeq: number;
  floorSeq: number;
  events: MailboxEntry[];
};

/** What the cell databases hold, all cells together. */
export type DatabaseSnapshot = {
  messages: Message[];
  members: ConversationMembers[];
  mailboxes: StoredMailbox[];
};

export type HistoryRecord = {
  /** Every send attempted, retries included. */
  sends: SendRecord[];
  /** Every ack received. A send without an ack is no fault: the ack may have been lost on the way. */
  acks: AckRecord[];
  deliveries: DeviceDeliveries[];
  database: DatabaseSnapshot;
  /**
   * The run ended quiescent: every send was answered or abandoned, membership events reached every
   * mailbox, and every device synced to the head of its mailbox and of each conversation it follows.
   * Only then are missing_from_mailbox and a device's missing tail faults rather than work in flight.
   */
  expectComplete: boolean;
};

// ---------------------------------------------------------------------------------------------------
// The report

export const findingKinds = [
  "acked_but_lost",
  "duplicate",
  "reorder",
  "gap",
  "phantom",
  "non_member_delivery",
  "missing_from_mailbox",
  "device_divergence",
] as const;
export type FindingKind = (typeof findingKinds)[number];

export type Finding = { readonly kind: FindingKind; readonly detail: string };

export type CheckReport = {
  readonly ok: boolean;
  /** The first findingsListedMax findings, in the order they were found. */
  readonly findings: readonly Finding[];
  /** Every finding, listed or not. */
  readonly findingsTotal: number;
  readonly counts: Readonly<Record<FindingKind, number>>;
  /** One line: passed with the record's sizes, or failed with the counts per kind and the first finding. */
  readonly summary: string;
};

/** Findings listed in a report; past it they are only counted, so a broken run cannot flood a log. */
export const findingsListedMax = 100;
/** Ids, seq ranges or holders named in one finding's detail; past it the detail says how many more. */
export const idsListedMax = 10;

// ---------------------------------------------------------------------------------------------------
// The checker

export function checkHistory(record: HistoryRecord): CheckReport {
  const findings = new FindingCollector();
  const index = indexRecord(record);
  checkMembers(record.database.members, index, findings);
  checkStoredMessages(index, findings);
  checkAcks(record.acks, index, findings);
  const mailboxes = checkMailboxes(record.database.mailboxes, index, findings);
  if (record.expectComplete) checkMailboxCompleteness(index, mailboxes, findings);
  for (const device of record.deliveries) checkDevice(device, index, mailboxes.get(device.userId), record.expectComplete, findings);
  index.copies.flush(findings);
  index.nonMembers.flush(findings);
  return findings.report(describeRecord(record, index));
}

/**
 * One conversation's stored messages, sorted by seq. `messageAt` reads a regular log (seqs 1..n, once
 * each) by position, so only an irregular one pays for a map by seq.
 */
class ConversationLog {
  readonly head: number;
  private readonly irregular: Map<number, Message> | undefined;

  constructor(readonly messages: readonly Message[]) {
    this.head = messages.at(-1)?.seq ?? 0;
    if (messages.every((message, position) => message.seq === position + 1)) return;
    this.irregular = new Map();
    for (const message of messages) if (!this.irregular.has(message.seq)) this.irregular.set(message.seq, message);
  }

  /** Seqs 1..n, once each. */
  get regular(): boolean {
    return this.irregular === undefined;
  }

  /** The first stored message at this seq. */
  messageAt(seq: number): Message | undefined {
    if (this.irregular !== undefined) return this.irregular.get(seq);
    return this.messages[seq - 1];
  }
}

type RecordIndex = {
  /** Every attempt of each send: a retry is rare, so a short list beats two sets per send. */
  readonly sendsByKey: Map<string, SendRecord[]>;
  readonly storedByKey: Map<string, Message[]>;
  readonly storedByMessageId: Map<string, Message[]>;
  readonly logs: Map<string, ConversationLog>;
  /** Conversation → member → join point; the first listed when a member is listed twice. */
  readonly joinPoints: Map<string, Map<string, number>>;
  readonly copies: CopyAudit;
  readonly nonMembers: NonMemberAudit;
};

/**
 * The dedupe key of a send, as the cells' unique constraint has it: (conversation, sender,
 * clientMessageId). Joined by spaces, which no id admits (protocol/src/ids.ts): built once per send, per
 * stored message and per ack, so it avoids JSON.stringify's array on runs of millions.
 */
function sendKey(conversationId: string, senderUserId: string, clientMessageId: string): string {
  return `${conversationId} ${senderUserId} ${clientMessageId}`;
}

function describeSend(conversationId: string, senderUserId: string, clientMessageId: string): string {
  return `send (conversation ${conversationId}, sender ${senderUserId}, clientMessageId ${clientMessageId})`;
}

function describeMessage(message: Message): string {
  return `message ${message.messageId} (conversation ${message.conversationId} seq ${message.seq})`;
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function indexRecord(record: HistoryRecord): RecordIndex {
  const sendsByKey = new Map<string, SendRecord[]>();
  for (const send of record.sends) pushTo(sendsByKey, sendKey(send.conversationId, send.senderUserId, send.clientMessageId), send);
  const storedByKey = new Map<string, Message[]>();
  const storedByMessageId = new Map<string, Message[]>();
  const storedByConversation = new Map<string, Message[]>();
  for (const message of record.database.messages) {
    pushTo(storedByKey, sendKey(message.conversationId, message.senderUserId, message.clientMessageId), message);
    pushTo(storedByMessageId, message.messageId, message);
    pushTo(storedByConversation, message.conversationId, message);
  }
  const logs = new Map<string, ConversationLog>();
  for (const [conversationId, messages] of storedByConversation)
    logs.set(conversationId, new ConversationLog(messages.sort((left, right) => left.seq - right.seq)));
  const joinPoints = new Map<string, Map<string, number>>();
  for (const entry of record.database.members) {
    let members = joinPoints.get(entry.conversationId);
    if (members === undefined) {
      members = new Map();
      joinPoints.set(entry.conversationId, members);
    }
    for (const { userId, joinedAfterSeq } of entry.members) if (!members.has(userId)) members.set(userId, joinedAfterSeq);
  }
  return {
    sendsByKey,
    storedByKey,
    storedByMessageId,
    logs,
    joinPoints,
    copies: new CopyAudit(),
    nonMembers: new NonMemberAudit(joinPoints),
  };
}

function joinPointOf(index: RecordIndex, conversationId: string, userId: string): number | undefined {
  return index.joinPoints.get(conversationId)?.get(userId);
}

// --- Members: one join point each, never past the conversation's head ---------------------------------

function checkMembers(entries: readonly ConversationMembers[], index: RecordIndex, findings: FindingCollector): void {
  const conflicts = new Map<string, { conversationId: string; userId: string; joinPoints: Set<number> }>();
  for (const entry of entries) {
    for (const { userId, joinedAfterSeq } of entry.members) {
      const kept = joinPointOf(index, entry.conversationId, userId);
      if (kept === undefined || kept === joinedAfterSeq) continue;
      const key = JSON.stringify([entry.conversationId, userId]);
      const conflict = conflicts.get(key) ?? { conversationId: entry.conversationId, userId, joinPoints: new Set([kept]) };
      conflict.joinPoints.add(joinedAfterSeq);
      conflicts.set(key, conflict);
    }
  }
  for (const { conversationId, userId, joinPoints } of conflicts.values()) {
    findings.add(
      "duplicate",
      `user ${userId} is a member of conversation ${conversationId} ${joinPoints.size} times, with join points ${formatSeqs([...joinPoints])}`,
    );
  }
  for (const [conversationId, members] of index.joinPoints) {
    const head = index.logs.get(conversationId)?.head ?? 0;
    const early = new Notes();
    for (const [userId, joinedAfterSeq] of members) if (joinedAfterSeq > head) early.add(`${userId} after seq ${joinedAfterSeq}`);
    // A join point is the head when the user joined, and heads only grow: one past it names messages that do not exist.
    if (early.count > 0)
      findings.add(
        "phantom",
        `conversation ${conversationId} (last stored seq ${head}) has ${early.count} members joined past its head: ${early.text()}`,
      );
  }
}

// --- Conversations: one total order, no gap, no duplicate, every message explained by a send ---------

function checkStoredMessages(index: RecordIndex, findings: FindingCollector): void {
  for (const [key, messages] of index.storedByKey) {
    const first = messages[0];
    if (first === undefined) continue;
    if (messages.length > 1) {
      findings.add(
        "duplicate",
        `${describeSend(first.conversationId, first.senderUserId, first.clientMessageId)} is stored ${messages.length} times: ` +
          listed(messages.map(describeMessage)),
      );
    }
    const attempts = index.sendsByKey.get(key);
    for (const message of distinctById(messages)) {
      const stored = `stored ${describeMessage(message)} from ${message.senderUserId}`;
      if (attempts === undefined) {
        findings.add(
          "phantom",
          `${stored} answers no send: clientMessageId ${message.clientMessageId} was never sent to that conversation`,
        );
        continue;
      }
      const fields = [];
      if (!attempts.some((attempt) => attempt.body === message.body)) fields.push("body");
      if (!attempts.some((attempt) => attempt.senderDeviceId === message.senderDeviceId)) fields.push("senderDeviceId");
      if (fields.length > 0) findings.add("phantom", `${stored} differs from every attempt of its send in ${fields.join(" and ")}`);
    }
  }
  for (const [messageId, messages] of index.storedByMessageId) {
    if (messages.length === 1) continue;
    const keys = new Set(messages.map((message) => sendKey(message.conversationId, message.senderUserId, message.clientMessageId)));
    if (keys.size > 1)
      findings.add(
        "duplicate",
        `messageId ${messageId} is stored for ${keys.size} different sends: ${listed(messages.map(describeMessage))}`,
      );
  }
  for (const [conversationId, log] of index.logs) {
    // A regular log (seqs 1..n, once each) has neither a seq held twice nor a gap: only others are taken apart.
    if (!log.regular) checkIrregularLog(conversationId, log, findings);
    // A sender was a member when it wrote: its message comes after its join point.
    const senders = new Map<string, string[]>();
    for (const message of log.messages) {
      const joinedAfterSeq = joinPointOf(index, conversationId, message.senderUserId);
      if (joinedAfterSeq === undefined || message.seq <= joinedAfterSeq) pushTo(senders, message.senderUserId, message.messageId);
    }
    for (const [senderUserId, messageIds] of senders) index.nonMembers.note(senderUserId, conversationId, "it wrote messages", messageIds);
  }
}

function checkIrregularLog(conversationId: string, log: ConversationLog, findings: FindingCollector): void {
  const messageIdsBySeq = new Map<number, Set<string>>();
  for (const message of log.messages) {
    const messageIds = messageIdsBySeq.get(message.seq) ?? new Set<string>();
    messageIds.add(message.messageId);
    messageIdsBySeq.set(message.seq, messageIds);
  }
  for (const [seq, messageIds] of messageIdsBySeq) {
    if (messageIds.size > 1)
      findings.add(
        "duplicate",
        `conversation ${conversationId} holds seq ${seq} ${messageIds.size} times: messages ${listed([...messageIds])}`,
      );
  }
  const missing = missingRanges(messageIdsBySeq.keys(), 1, log.head);
  if (missing.count > 0)
    findings.add(
      "gap",
      `conversation ${conversationId} (${messageIdsBySeq.size} seqs stored) lacks ${missing.count} seqs: ${missing.text}`,
    );
}

// --- Acks: an acked message is stored, with the messageId and seq of its ack ---------------------------

function checkAcks(acks: readonly AckRecord[], index: RecordIndex, findings: FindingCollector): void {
  const reported = new Set<string>();
  for (const ack of acks) {
    // A retry is acked again with the same answer: judge each distinct answer once.
    const answer = `${sendKey(ack.conversationId, ack.senderUserId, ack.clientMessageId)} ${ack.messageId} ${ack.seq}`;
    if (reported.has(answer)) continue;
    reported.add(answer);
    const stored = index.storedByKey.get(sendKey(ack.conversationId, ack.senderUserId, ack.clientMessageId)) ?? [];
    if (stored.some((message) => message.messageId === ack.messageId && message.seq === ack.seq)) continue;
    const send = describeSend(ack.conversationId, ack.senderUserId, ack.clientMessageId);
    const found = stored.length === 0 ? "nothing is stored for it" : `the database holds ${listed(stored.map(describeMessage))}`;
    findings.add("acked_but_lost", `${send} was acked as message ${ack.messageId} seq ${ack.seq}, but ${found}`);
  }
}

// --- Mailboxes: gapless, no event twice, one joined event per membership, members only ----------------

type MailboxView = {
  readonly mailbox: StoredMailbox;
  /** The first entry at each seq. */
  readonly bySeq: Map<number, MailboxEntry>;
  /** The seqs of each conversation's joined events. */
  readonly joinedSeqsByConversation: Map<string, number[]>;
};

function checkMailboxes(mailboxes: readonly StoredMailbox[], index: RecordIndex, findings: FindingCollector): Map<string, MailboxView> {
  const views = new Map<string, MailboxView>();
  const countByUser = new Map<string, number>();
  for (const mailbox of mailboxes) countByUser.set(mailbox.userId, (countByUser.get(mailbox.userId) ?? 0) + 1);
  for (const [userId, count] of countByUser) {
    if (count > 1)
      findings.add(
        "duplicate",
        `user ${userId} has ${count} mailboxes (a user has one home cell); only the first is checked against devices`,
      );
  }
  for (const mailbox of mailboxes) {
    const view = checkMailbox(mailbox, index, findings);
    if (!views.has(mailbox.userId)) views.set(mailbox.userId, view);
  }
  return views;
}

function checkMailbox(mailbox: StoredMailbox, index: RecordIndex, findings: FindingCollector): MailboxView {
  const owner = `mailbox of ${mailbox.userId}`;
  const entries = [...mailbox.events].sort((left, right) => left.seq - right.seq);
  const bySeq = new Map<number, MailboxEntry>();
  const entriesBySeq = new Map<number, MailboxEntry[]>();
  const seqsByEventId = new Map<string, Set<number>>();
  for (const entry of entries) {
    if (!bySeq.has(entry.seq)) bySeq.set(entry.seq, entry);
    pushTo(entriesBySeq, entry.seq, entry);
    const seqs = seqsByEventId.get(entry.eventId) ?? new Set<number>();
    seqs.add(entry.seq);
    seqsByEventId.set(entry.eventId, seqs);
  }
  for (const [seq, held] of entriesBySeq) {
    if (held.length > 1)
      findings.add("duplicate", `${owner} holds seq ${seq} ${held.length} times (events ${listed(held.map((entry) => entry.eventId))})`);
  }
  for (const [eventId, seqs] of seqsByEventId) {
    // Appends are idempotent per (user, eventId): one event id at two seqs is one event appended twice.
    if (seqs.size > 1) findings.add("duplicate", `${owner} holds event ${eventId} ${seqs.size} times, at seqs ${formatSeqs([...seqs])}`);
  }
  const missing = missingRanges(bySeq.keys(), mailbox.floorSeq + 1, mailbox.lastSeq);
  const outside = [...bySeq.keys()].filter((seq) => seq <= mailbox.floorSeq || seq > mailbox.lastSeq);
  if (missing.count > 0 || outside.length > 0) {
    const parts = [
      missing.count > 0 ? `lacks ${missing.count} seqs: ${missing.text}` : undefined,
      outside.length > 0 ? `holds seqs ${formatSeqs(outside)} outside its range` : undefined,
    ];
    findings.add(
      "gap",
      `${owner} (floor ${mailbox.floorSeq}, last ${mailbox.lastSeq}) ${parts.filter((part) => part !== undefined).join(" and ")}`,
    );
  }
  const joinedSeqsByConversation = new Map<string, number[]>();
  const nonMemberSeqs = new Map<string, number[]>();
  for (const { seq, eventId, event } of bySeq.values()) {
    const joinedAfterSeq = joinPointOf(index, event.conversationId, mailbox.userId);
    if (joinedAfterSeq === undefined) pushTo(nonMemberSeqs, event.conversationId, seq);
    if (event.kind !== "joined") continue;
    pushTo(joinedSeqsByConversation, event.conversationId, seq);
    if (joinedAfterSeq === undefined) continue;
    // The joined event is the mailbox's copy of the membership row: it must say what the row says.
    const differences = [];
    if (event.afterSeq !== joinedAfterSeq)
      differences.push(`afterSeq ${event.afterSeq} where the member's join point is ${joinedAfterSeq}`);
    if (eventId !== joinedEventId(event.conversationId))
      differences.push(`event id ${eventId} where ${joinedEventId(event.conversationId)} is due`);
    if (differences.length > 0)
      findings.add(
        "phantom",
        `${owner} seq ${seq}: the joined event of conversation ${event.conversationId} differs from its membership: ${differences.join("; ")}`,
      );
  }
  for (const [conversationId, seqs] of joinedSeqsByConversation) {
    if (seqs.length > 1)
      findings.add(
        "duplicate",
        `${owner} holds ${seqs.length} joined events of conversation ${conversationId}, at seqs ${formatSeqs(seqs)}`,
      );
  }
  for (const [conversationId, seqs] of nonMemberSeqs)
    index.nonMembers.note(mailbox.userId, conversationId, "its mailbox holds events of it at seqs", [formatSeqs(seqs)]);
  return { mailbox, bySeq, joinedSeqsByConversation };
}

function joinedEventId(conversationId: string): string {
  return `joined-${conversationId}`;
}

/**
 * With a quiescent run: each member's mailbox holds the joined event of each of its conversations. Where
 * retention cut the mailbox (floorSeq > 0) a missing one may have been cut, so it is not required.
 */
function checkMailboxCompleteness(index: RecordIndex, mailboxes: Map<string, MailboxView>, findings: FindingCollector): void {
  const lacking = new Map<string, { conversations: number; lacked: string[] }>();
  for (const [conversationId, members] of index.joinPoints) {
    for (const userId of members.keys()) {
      const entry = lacking.get(userId) ?? { conversations: 0, lacked: [] };
      lacking.set(userId, entry);
      entry.conversations++;
      const view = mailboxes.get(userId);
      if (view?.joinedSeqsByConversation.has(conversationId) === true) continue;
      if (view !== undefined && view.mailbox.floorSeq > 0) continue;
      entry.lacked.push(conversationId);
    }
  }
  for (const [userId, { conversations, lacked }] of lacking) {
    if (lacked.length === 0) continue;
    const where = mailboxes.has(userId) ? "lacks" : "has no mailbox and so lacks";
    findings.add(
      "missing_from_mailbox",
      `user ${userId} ${where} the joined event of ${lacked.length} of its ${conversations} conversations: ${listed(lacked)}`,
    );
  }
}

// --- Devices: mailbox events gapless from the device's start; each conversation gapless from its own ---

function checkDevice(
  device: DeviceDeliveries,
  index: RecordIndex,
  view: MailboxView | undefined,
  expectComplete: boolean,
  findings: FindingCollector,
): void {
  const owner = `device ${device.userId}/${device.deviceId}`;
  const joinStarts = checkDeviceEvents(device, owner, view, expectComplete, findings);
  checkDeviceMessages(device, owner, index, joinStarts, expectComplete, findings);
}

/**
 * The device's mailbox events: in increasing seq order, each once, none missing between its start and
 * the last it received, each equal to the stored event; with a quiescent run, up to the mailbox's head.
 * Returns the join point of each conversation whose joined event the device received (the first one).
 */
function checkDeviceEvents(
  device: DeviceDeliveries,
  owner: string,
  view: MailboxView | undefined,
  expectComplete: boolean,
  findings: FindingCollector,
): Map<string, number> {
  const joinStarts = new Map<string, number>();
  const received = new Map<number, DeliveredEvent>();
  const repeated = new SeqNotes();
  const reorders = new Notes();
  let highest = 0;
  for (const [position, delivered] of device.events.entries()) {
    const { seq, event } = delivered;
    if (received.has(seq) || (device.startAfterSeq !== undefined && seq <= device.startAfterSeq)) {
      repeated.add(seq);
      continue;
    }
    received.set(seq, delivered);
    if (seq < highest) reorders.add(`seq ${seq} after ${highest} (event ${position + 1})`);
    highest = Math.max(highest, seq);
    if (event.kind === "joined" && !joinStarts.has(event.conversationId)) joinStarts.set(event.conversationId, event.afterSeq);
  }
  if (repeated.count > 0) {
    const held = device.startAfterSeq === undefined ? "" : `, or held already (it started after seq ${device.startAfterSeq})`;
    findings.add("duplicate", `${owner} received ${repeated.count} mailbox events twice${held}: seqs ${repeated.text()}`);
  }
  if (reorders.count > 0) findings.add("reorder", `${owner} received ${reorders.count} mailbox events out of order: ${reorders.text()}`);
  const startAfterSeq = device.startAfterSeq ?? (received.size > 0 ? smallest(received.keys()) - 1 : undefined);
  if (startAfterSeq !== undefined && highest > startAfterSeq) {
    const missing = missingRanges(received.keys(), startAfterSeq + 1, highest);
    if (missing.count > 0)
      findings.add(
        "gap",
        `${owner} received mailbox seqs ${startAfterSeq + 1}..${highest} but not ${missing.count} of them: ${missing.text}`,
      );
  }
  const floorSeq = view?.mailbox.floorSeq ?? 0;
  const lastSeq = view?.mailbox.lastSeq ?? 0;
  const differing = new Notes();
  const absent: number[] = [];
  for (const [seq, { event }] of received) {
    if (seq <= floorSeq) continue;
    const entry = view?.bySeq.get(seq);
    if (entry === undefined) absent.push(seq);
    else {
      const fields = eventDifferences(entry.event, event);
      if (fields.length > 0) differing.add(`seq ${seq} in ${fields.join(", ")}`);
    }
  }
  // Seqs between the start and the last received that the device lacks are gaps, reported above: here the tail.
  const heldUpTo = Math.max(highest, startAfterSeq ?? lastSeq, floorSeq);
  const tail =
    expectComplete && lastSeq > heldUpTo
      ? `it never received seqs ${heldUpTo + 1 === lastSeq ? lastSeq : `${heldUpTo + 1}..${lastSeq}`}`
      : undefined;
  if (differing.count === 0 && absent.length === 0 && tail === undefined) return joinStarts;
  const parts = [
    differing.count > 0 ? `${differing.count} events differ (${differing.text()})` : undefined,
    absent.length > 0
      ? `it holds seqs ${formatSeqs(absent)} that ${view === undefined ? "no mailbox of the user" : "the mailbox"} lacks`
      : undefined,
    tail,
  ];
  findings.add(
    "device_divergence",
    `${owner} differs from the mailbox of ${device.userId} (last ${lastSeq}): ${parts.filter((part) => part !== undefined).join("; ")}`,
  );
  return joinStarts;
}

const joinedFields = ["conversationId", "conversationKind", "title", "afterSeq", "addedByUserId"] as const;
const receiptFields = ["conversationId", "userId", "readSeq", "deliveredSeq"] as const;

/** The fields in which a device's copy differs from the stored event ("kind" when the kinds differ). */
function eventDifferences(stored: MailboxEvent, copy: MailboxEvent | UnknownMailboxEvent): string[] {
  if (stored.kind === "joined" && copy.kind === "joined") return joinedFields.filter((field) => stored[field] !== copy[field]);
  if (stored.kind === "receipt" && copy.kind === "receipt") return receiptFields.filter((field) => stored[field] !== copy[field]);
  return [`kind (${copy.kind === "unknown" ? `unknown ${copy.unknownKind}` : copy.kind} where ${stored.kind} is stored)`];
}

/** One conversation as one device received it. */
type FollowedConversation = {
  readonly conversationId: string;
  /** The seq of the last message the device held when it started following the conversation. */
  readonly startAfterSeq: number;
  /** Recorded or from a joined event; false when inferred from the first message received. */
  readonly startKnown: boolean;
  readonly member: boolean;
  readonly log: ConversationLog | undefined;
  /** The highest seq received. */
  highest: number;
  /** The seqs in startAfterSeq+1..highest not received yet, as ranges in increasing order. */
  readonly holes: SeqRange[];
  /** Notes made only when something is wrong, so a clean conversation costs no allocation. */
  repeated?: SeqNotes;
  reorders?: Notes;
  misplaced?: Notes;
  receivedWhileNonMember?: SeqNotes;
};

type SeqRange = { from: number; to: number };

/**
 * The device's messages, per conversation: consecutive from the start, each once, each the stored
 * message at its seq; the user a member; with a quiescent run, up to the conversation's stored head. One
 * pass over the messages, one map lookup per message for its conversation and one for its stored copy.
 */
function checkDeviceMessages(
  device: DeviceDeliveries,
  owner: string,
  index: RecordIndex,
  joinStarts: Map<string, number>,
  expectComplete: boolean,
  findings: FindingCollector,
): void {
  const followed = new Map<string, FollowedConversation>();
  const follow = (conversationId: string, firstSeq: number): FollowedConversation => {
    let conversation = followed.get(conversationId);
    if (conversation !== undefined) return conversation;
    const recorded =
      device.conversationStarts !== undefined && Object.hasOwn(device.conversationStarts, conversationId)
        ? device.conversationStarts[conversationId]
        : undefined;
    const known = recorded ?? joinStarts.get(conversationId);
    const startAfterSeq = known ?? firstSeq - 1;
    conversation = {
      conversationId,
      startAfterSeq,
      startKnown: known !== undefined,
      member: joinPointOf(index, conversationId, device.userId) !== undefined,
      log: index.logs.get(conversationId),
      highest: startAfterSeq,
      holes: [],
    };
    followed.set(conversationId, conversation);
    return conversation;
  };
  for (const delivered of device.messages) {
    const conversation = follow(delivered.conversationId, delivered.seq);
    if (receive(conversation, delivered.seq)) checkCopy(conversation, delivered, owner, index);
  }
  // Conversations the device started from but received nothing of: still held to their head.
  for (const conversationId of Object.keys(device.conversationStarts ?? {})) follow(conversationId, 1);
  for (const conversationId of joinStarts.keys()) follow(conversationId, 1);
  for (const conversation of followed.values()) reportFollowed(conversation, owner, device, index, expectComplete, findings);
}

/** Places one received seq; false when the device held it already (no copy to check). */
function receive(conversation: FollowedConversation, seq: number): boolean {
  if (!conversation.member) (conversation.receivedWhileNonMember ??= new SeqNotes()).add(seq);
  if (seq > conversation.highest) {
    if (seq > conversation.highest + 1) conversation.holes.push({ from: conversation.highest + 1, to: seq - 1 });
    conversation.highest = seq;
    return true;
  }
  if (seq > conversation.startAfterSeq && fillHole(conversation.holes, seq)) {
    (conversation.reorders ??= new Notes()).add(`seq ${seq} after ${conversation.highest}`);
    return true;
  }
  if (seq <= conversation.startAfterSeq && !conversation.startKnown) {
    // Before the first one received, in a live session: out of order, not held before.
    (conversation.reorders ??= new Notes()).add(`seq ${seq} after ${conversation.highest}`);
    return true;
  }
  (conversation.repeated ??= new SeqNotes()).add(seq);
  return false;
}

/** Removes seq from the hole holding it; false when no hole holds it (it was received already). */
function fillHole(holes: SeqRange[], seq: number): boolean {
  let low = 0;
  let high = holes.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const hole = holes[middle];
    if (hole === undefined) return false;
    if (seq < hole.from) high = middle - 1;
    else if (seq > hole.to) low = middle + 1;
    else {
      if (hole.from === hole.to) holes.splice(middle, 1);
      else if (seq === hole.from) hole.from++;
      else if (seq === hole.to) hole.to--;
      else {
        holes.splice(middle + 1, 0, { from: seq + 1, to: hole.to });
        hole.to = seq - 1;
      }
      return true;
    }
  }
  return false;
}

/** The copy is the stored message at its seq, by messageId: else a phantom (stored nowhere) or misplaced. */
function checkCopy(conversation: FollowedConversation, delivered: DeliveredMessage, owner: string, index: RecordIndex): void {
  const stored = conversation.log?.messageAt(delivered.seq);
  if (stored?.messageId === delivered.messageId) return;
  if (!index.storedByMessageId.has(delivered.messageId)) {
    index.copies.note(delivered.messageId, `${owner} conversation ${delivered.conversationId} seq ${delivered.seq}`);
    return;
  }
  const there = stored === undefined ? `past the head of its log (${conversation.log?.head ?? 0})` : `${stored.messageId} in its log`;
  (conversation.misplaced ??= new Notes()).add(`seq ${delivered.seq} is message ${delivered.messageId} on the device, ${there}`);
}

function reportFollowed(
  conversation: FollowedConversation,
  owner: string,
  device: DeviceDeliveries,
  index: RecordIndex,
  expectComplete: boolean,
  findings: FindingCollector,
): void {
  const { conversationId, startAfterSeq, highest, holes } = conversation;
  const which = `conversation ${conversationId}`;
  if (conversation.repeated !== undefined) {
    const held = conversation.startKnown ? `, or held already (it started after seq ${startAfterSeq})` : "";
    findings.add(
      "duplicate",
      `${owner} received ${conversation.repeated.count} messages of ${which} twice${held}: seqs ${conversation.repeated.text()}`,
    );
  }
  if (conversation.reorders !== undefined) {
    findings.add(
      "reorder",
      `${owner} received ${conversation.reorders.count} messages of ${which} out of order: ${conversation.reorders.text()}`,
    );
  }
  if (holes.length > 0) {
    let count = 0;
    for (const hole of holes) count += hole.to - hole.from + 1;
    const ranges = holes.map((hole) => (hole.from === hole.to ? `${hole.from}` : `${hole.from}..${hole.to}`));
    findings.add("gap", `${owner} received ${which} seqs ${startAfterSeq + 1}..${highest} but not ${count} of them: ${listed(ranges)}`);
  }
  if (conversation.receivedWhileNonMember !== undefined) {
    index.nonMembers.note(device.userId, conversationId, `device ${device.deviceId} received seqs`, [
      conversation.receivedWhileNonMember.text(),
    ]);
  }
  const head = conversation.log?.head ?? 0;
  const heldUpTo = Math.max(highest, startAfterSeq);
  // A non-member is reported above; demanding the rest of the conversation from it would only repeat that.
  const tail =
    expectComplete && conversation.member && head > heldUpTo
      ? `it never received seqs ${heldUpTo + 1 === head ? head : `${heldUpTo + 1}..${head}`} (it follows the conversation from after seq ${startAfterSeq})`
      : undefined;
  if (conversation.misplaced === undefined && tail === undefined) return;
  const parts = [
    conversation.misplaced === undefined ? undefined : `${conversation.misplaced.count} seqs differ (${conversation.misplaced.text()})`,
    tail,
  ];
  findings.add(
    "device_divergence",
    `${owner} differs from the log of ${which} (last ${head}): ${parts.filter((part) => part !== undefined).join("; ")}`,
  );
}

// --- Audits gathered across mailboxes and devices, reported once per message or per (user, conversation) -

/** Copies on devices of messages stored in no conversation, one finding per messageId. */
class CopyAudit {
  private readonly holders = new Map<string, Notes>();

  note(messageId: string, holder: string): void {
    let holders = this.holders.get(messageId);
    if (holders === undefined) {
      holders = new Notes();
      this.holders.set(messageId, holders);
    }
    holders.add(holder);
  }

  flush(findings: FindingCollector): void {
    for (const [messageId, holders] of this.holders) {
      findings.add(
        "phantom",
        `message ${messageId}, held by ${holders.count} ${holders.count === 1 ? "copy" : "copies"} (${holders.text()}), is stored in no conversation`,
      );
    }
  }
}

/** Messages and events held or written across a membership boundary, one finding per (user, conversation). */
class NonMemberAudit {
  private readonly crossings = new Map<string, { userId: string; conversationId: string; places: Map<string, Set<string>> }>();

  constructor(private readonly joinPoints: Map<string, Map<string, number>>) {}

  note(userId: string, conversationId: string, place: string, items: readonly string[]): void {
    const key = JSON.stringify([userId, conversationId]);
    let crossing = this.crossings.get(key);
    if (crossing === undefined) {
      crossing = { userId, conversationId, places: new Map() };
      this.crossings.set(key, crossing);
    }
    const held = crossing.places.get(place) ?? new Set<string>();
    for (const item of items) held.add(item);
    crossing.places.set(place, held);
  }

  flush(findings: FindingCollector): void {
    for (const { userId, conversationId, places } of this.crossings.values()) {
      const joinedAfterSeq = this.joinPoints.get(conversationId)?.get(userId);
      const status =
        joinedAfterSeq === undefined
          ? `is not a member of conversation ${conversationId}`
          : `became a member of conversation ${conversationId} only after its seq ${joinedAfterSeq}`;
      const where = [...places].map(([place, items]) => `${place} ${listed([...items])}`);
      findings.add("non_member_delivery", `user ${userId} ${status}, yet ${where.join("; ")}`);
    }
  }
}

// --- Small helpers ---------------------------------------------------------------------------------

class FindingCollector {
  private readonly listedFindings: Finding[] = [];
  private readonly counts = Object.fromEntries(findingKinds.map((kind) => [kind, 0])) as Record<FindingKind, number>;
  private total = 0;

  add(kind: FindingKind, detail: string): void {
    this.counts[kind]++;
    this.total++;
    if (this.listedFindings.length < findingsListedMax) this.listedFindings.push({ kind, detail });
  }

  report(recordSize: string): CheckReport {
    const ok = this.total === 0;
    const counted = findingKinds.filter((kind) => this.counts[kind] > 0).map((kind) => `${kind} ${this.counts[kind]}`);
    const first = this.listedFindings[0];
    const summary = ok
      ? `history check passed: ${recordSize}`
      : `history check failed with ${this.total} findings (${counted.join(", ")}) in ${recordSize}; first: ${first?.kind}: ${first?.detail}`;
    return { ok, findings: this.listedFindings, findingsTotal: this.total, counts: { ...this.counts }, summary };
  }
}

function describeRecord(record: HistoryRecord, index: RecordIndex): string {
  return (
    `${record.sends.length} send attempts (${index.sendsByKey.size} distinct), ${record.acks.length} acks, ` +
    `${record.database.messages.length} stored messages in ${index.logs.size} conversations, ` +
    `${record.database.mailboxes.length} mailboxes, ${record.deliveries.length} devices` +
    (record.expectComplete ? ", run quiescent" : "")
  );
}

/** Short notes, the first idsListedMax kept, all counted. */
class Notes {
  private readonly kept: string[] = [];
  count = 0;

  add(note: string): void {
    this.count++;
    if (this.kept.length < idsListedMax) this.kept.push(note);
  }

  text(): string {
    return this.count > this.kept.length ? `${this.kept.join(", ")} and ${this.count - this.kept.length} more` : this.kept.join(", ");
  }
}

/**
 * Seqs as they come, kept as ranges of consecutive ones (the first idsListedMax ranges), all counted: a
 * device that received a whole conversation twice costs one range, not a seq each.
 */
class SeqNotes {
  private readonly ranges: SeqRange[] = [];
  private rangesMore = 0;
  count = 0;

  add(seq: number): void {
    this.count++;
    const last = this.ranges.at(-1);
    if (last !== undefined && seq === last.to + 1 && this.rangesMore === 0) last.to = seq;
    else if (this.ranges.length < idsListedMax) this.ranges.push({ from: seq, to: seq });
    else this.rangesMore++;
  }

  text(): string {
    const shown = this.ranges.map((range) => (range.from === range.to ? `${range.from}` : `${range.from}..${range.to}`)).join(", ");
    return this.rangesMore > 0 ? `${shown} and ${this.rangesMore} more` : shown;
  }
}

function listed(items: readonly string[]): string {
  const shown = items.slice(0, idsListedMax).join(", ");
  return items.length > idsListedMax ? `${shown} and ${items.length - idsListedMax} more` : shown;
}

function distinctById(messages: readonly Message[]): readonly Message[] {
  if (messages.length === 1) return messages;
  const byId = new Map<string, Message>();
  for (const message of messages) if (!byId.has(message.messageId)) byId.set(message.messageId, message);
  return [...byId.values()];
}

/**
 * The seqs of from..to that `seqs` lacks: how many, and as ranges. Works on ranges, not seq by seq, so a
 * corrupt seq near Number.MAX_SAFE_INTEGER costs nothing.
 */
function missingRanges(seqs: Iterable<number>, from: number, to: number): { count: number; text: string } {
  const sorted = [...new Set(seqs)].filter((seq) => seq >= from && seq <= to).sort((left, right) => left - right);
  const ranges: string[] = [];
  let count = 0;
  let next = from;
  for (const seq of [...sorted, to + 1]) {
    if (seq > next) {
      ranges.push(seq - 1 === next ? `${next}` : `${next}..${seq - 1}`);
      count += seq - next;
    }
    next = seq + 1;
  }
  return { count, text: listed(ranges) };
}

/** Math.min spreads its arguments on the stack; a long run's seqs would overflow it. */
function smallest(values: Iterable<number>): number {
  let result = Number.POSITIVE_INFINITY;
  for (const value of values) if (value < result) result = value;
  return result === Number.POSITIVE_INFINITY ? 0 : result;
}

/** "3..7, 9, 12..15", at most idsListedMax ranges. */
function formatSeqs(seqs: readonly number[]): string {
  const sorted = [...new Set(seqs)].sort((left, right) => left - right);
  const ranges: string[] = [];
  let start: number | undefined;
  let previous = 0;
  for (const seq of sorted) {
    if (start !== undefined && seq === previous + 1) {
      previous = seq;
      continue;
    }
    if (start !== undefined) ranges.push(start === previous ? `${start}` : `${start}..${previous}`);
    start = seq;
    previous = seq;
  }
  if (start !== undefined) ranges.push(start === previous ? `${start}` : `${start}..${previous}`);
  return listed(ranges);
}
