// The history checker: given what the clients of a run attempted and received and what the cell databases
// hold at its end, it names every broken promise of docs/architecture.md (invariants 1 to 5). Pure: the
// caller gathers the record (database-dump.ts reads the databases), so tests can plant one fault in a
// hand-made record and see it reported.
//
// A send is identified as the cells' unique constraint identifies it: (conversation, sender,
// clientMessageId), so the same clientMessageId sent to two conversations is two sends.
//
// What the checker assumes of the run it is given:
// - Membership only grows, and a conversation's members are in place before its first send: a member is
//   expected to hold every message of the conversation in its mailbox. (Fan-out goes to the members at
//   send time, so a member added mid-run would be reported missing the older messages.)
// - Each session of a device after its first resumes after the last seq the device holds, as the client
//   SDK does; a session started live at the head would skip seqs, which reads as a gap.
// - No device was resynced (`resync` frame: its events were cut by retention); a resync also skips seqs.
//   Retention is not built yet.
import type { Message } from "@cellwire/protocol";

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

/** One `event` frame: `seq` is the user's mailbox seq, not the message's conversation seq. */
export type DeliveredEvent = { seq: number; message: Message };

/**
 * Everything one device received over the run, in arrival order, across all its sessions. One entry per
 * device. `startAfterSeq` is the resumeAfterSeq of the device's first hello of the run (0 for a device
 * that asked for the whole mailbox): events up to it were never due to this device. When absent (a
 * device that started live at the head), the device is taken to start just before the first event it
 * received, so a device that never received anything is not held to any: record it to check more.
 */
export type DeviceDeliveries = {
  userId: string;
  deviceId: string;
  startAfterSeq?: number;
  events: DeliveredEvent[];
};

export type ConversationMembers = { conversationId: string; userIds: string[] };

export type MailboxEntry = { seq: number; eventId: string; message: Message };

/**
 * A user's mailbox as stored: `lastSeq` is its head, `floorSeq` the last seq cut by retention (0 when none
 * was), so its events are exactly floorSeq+1..lastSeq.
 */
export type StoredMailbox = {
  userId: string;
  lastSeq: number;
  floorSeq: number;
  events: MailboxEntry[];
  /**
   * Seqs held by events other than messages (receipts): they fill the mailbox's sequence, so they are
   * no gap, but carry no message to check. Devices may skip recording them.
   */
  otherEventSeqs?: number[];
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
   * The run ended quiescent: every send was answered or abandoned, fan-out finished, and every device
   * synced to the head of its mailbox. Only then are missing_from_mailbox and a device's missing tail
   * faults rather than work in flight.
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
  checkStoredMessages(index, findings);
  checkAcks(record.acks, index, findings);
  const mailboxes = checkMailboxes(record.database.mailboxes, index, findings);
  if (record.expectComplete) checkMailboxCompleteness(index, mailboxes, findings);
  for (const device of record.deliveries) checkDevice(device, index, mailboxes, record.expectComplete, findings);
  index.copies.flush(findings);
  index.nonMembers.flush(findings);
  return findings.report(describeRecord(record, index));
}

type SendExplanation = { readonly bodies: Set<string>; readonly deviceIds: Set<string> };

type RecordIndex = {
  readonly sendsByKey: Map<string, SendExplanation>;
  readonly storedByKey: Map<string, Message[]>;
  readonly storedByMessageId: Map<string, Message[]>;
  /** Each conversation's stored messages, sorted by seq. */
  readonly storedByConversation: Map<string, Message[]>;
  readonly membersByConversation: Map<string, Set<string>>;
  readonly copies: CopyAudit;
  readonly nonMembers: NonMemberAudit;
};

/** The dedupe key of a send, as the cells' unique constraint has it: (conversation, sender, clientMessageId). */
function sendKey(conversationId: string, senderUserId: string, clientMessageId: string): string {
  return JSON.stringify([conversationId, senderUserId, clientMessageId]);
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
  const sendsByKey = new Map<string, SendExplanation>();
  for (const send of record.sends) {
    const key = sendKey(send.conversationId, send.senderUserId, send.clientMessageId);
    let explanation = sendsByKey.get(key);
    if (explanation === undefined) {
      explanation = { bodies: new Set(), deviceIds: new Set() };
      sendsByKey.set(key, explanation);
    }
    explanation.bodies.add(send.body);
    explanation.deviceIds.add(send.senderDeviceId);
  }
  const storedByKey = new Map<string, Message[]>();
  const storedByMessageId = new Map<string, Message[]>();
  const storedByConversation = new Map<string, Message[]>();
  for (const message of record.database.messages) {
    pushTo(storedByKey, sendKey(message.conversationId, message.senderUserId, message.clientMessageId), message);
    pushTo(storedByMessageId, message.messageId, message);
    pushTo(storedByConversation, message.conversationId, message);
  }
  for (const messages of storedByConversation.values()) messages.sort((left, right) => left.seq - right.seq);
  const membersByConversation = new Map<string, Set<string>>();
  for (const entry of record.database.members) {
    const members = membersByConversation.get(entry.conversationId) ?? new Set<string>();
    for (const userId of entry.userIds) members.add(userId);
    membersByConversation.set(entry.conversationId, members);
  }
  return {
    sendsByKey,
    storedByKey,
    storedByMessageId,
    storedByConversation,
    membersByConversation,
    copies: new CopyAudit(storedByMessageId),
    nonMembers: new NonMemberAudit(),
  };
}

function isMember(index: RecordIndex, conversationId: string, userId: string): boolean {
  return index.membersByConversation.get(conversationId)?.has(userId) === true;
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
    const explanation = index.sendsByKey.get(key);
    for (const message of distinctById(messages)) {
      const stored = `stored ${describeMessage(message)} from ${message.senderUserId}`;
      if (explanation === undefined) {
        findings.add("phantom", `${stored} answers no send: clientMessageId ${message.clientMessageId} was never sent to that conversation`);
        continue;
      }
      const fields = [];
      if (!explanation.bodies.has(message.body)) fields.push("body");
      if (!explanation.deviceIds.has(message.senderDeviceId)) fields.push("senderDeviceId");
      if (fields.length > 0) findings.add("phantom", `${stored} differs from every attempt of its send in ${fields.join(" and ")}`);
    }
  }
  for (const [messageId, messages] of index.storedByMessageId) {
    const keys = new Set(messages.map((message) => sendKey(message.conversationId, message.senderUserId, message.clientMessageId)));
    if (keys.size > 1) findings.add("duplicate", `messageId ${messageId} is stored for ${keys.size} different sends: ${listed(messages.map(describeMessage))}`);
  }
  for (const [conversationId, messages] of index.storedByConversation) {
    const messageIdsBySeq = new Map<number, Set<string>>();
    for (const message of messages) {
      const messageIds = messageIdsBySeq.get(message.seq) ?? new Set<string>();
      messageIds.add(message.messageId);
      messageIdsBySeq.set(message.seq, messageIds);
    }
    for (const [seq, messageIds] of messageIdsBySeq) {
      if (messageIds.size > 1) findings.add("duplicate", `conversation ${conversationId} holds seq ${seq} ${messageIds.size} times: messages ${listed([...messageIds])}`);
    }
    const missing = missingRanges(messageIdsBySeq.keys(), 1, largest(messageIdsBySeq.keys()));
    if (missing.count > 0) findings.add("gap", `conversation ${conversationId} (${messageIdsBySeq.size} seqs stored) lacks ${missing.count} seqs: ${missing.text}`);
    const senders = new Map<string, string[]>();
    for (const message of messages) if (!isMember(index, conversationId, message.senderUserId)) pushTo(senders, message.senderUserId, message.messageId);
    for (const [senderUserId, messageIds] of senders) index.nonMembers.note(senderUserId, conversationId, "it wrote", messageIds);
  }
}

// --- Acks: an acked message is stored, with the messageId and seq of its ack ---------------------------

function checkAcks(acks: readonly AckRecord[], index: RecordIndex, findings: FindingCollector): void {
  const reported = new Set<string>();
  for (const ack of acks) {
    // A retry is acked again with the same answer: judge each distinct answer once.
    const answer = JSON.stringify([ack.conversationId, ack.senderUserId, ack.clientMessageId, ack.messageId, ack.seq]);
    if (reported.has(answer)) continue;
    reported.add(answer);
    const stored = index.storedByKey.get(sendKey(ack.conversationId, ack.senderUserId, ack.clientMessageId)) ?? [];
    if (stored.some((message) => message.messageId === ack.messageId && message.seq === ack.seq)) continue;
    const send = describeSend(ack.conversationId, ack.senderUserId, ack.clientMessageId);
    const found = stored.length === 0 ? "nothing is stored for it" : `the database holds ${listed(stored.map(describeMessage))}`;
    findings.add("acked_but_lost", `${send} was acked as message ${ack.messageId} seq ${ack.seq}, but ${found}`);
  }
}

// --- Mailboxes: gapless, no duplicate, in conversation order, members only, true copies ---------------

type MailboxView = {
  readonly mailbox: StoredMailbox;
  /** The first entry at each seq. */
  readonly bySeq: Map<number, MailboxEntry>;
  /** What the mailbox holds of each conversation. */
  readonly byConversation: Map<string, HeldConversation>;
};

/** The messages of one conversation held in a mailbox, with the smallest and largest conversation seq. */
type HeldConversation = { readonly messageIds: Set<string>; seqMin: number; seqLatest: number };

function checkMailboxes(mailboxes: readonly StoredMailbox[], index: RecordIndex, findings: FindingCollector): Map<string, MailboxView> {
  const views = new Map<string, MailboxView>();
  const countByUser = new Map<string, number>();
  for (const mailbox of mailboxes) countByUser.set(mailbox.userId, (countByUser.get(mailbox.userId) ?? 0) + 1);
  for (const [userId, count] of countByUser) {
    if (count > 1) findings.add("duplicate", `user ${userId} has ${count} mailboxes (a user has one home cell); only the first is checked against devices`);
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
  const seqsByMessageId = new Map<string, number[]>();
  const seqsByEventId = new Map<string, number[]>();
  const entriesBySeq = new Map<number, MailboxEntry[]>();
  for (const entry of entries) {
    if (!bySeq.has(entry.seq)) bySeq.set(entry.seq, entry);
    pushTo(seqsByMessageId, entry.message.messageId, entry.seq);
    pushTo(seqsByEventId, entry.eventId, entry.seq);
    pushTo(entriesBySeq, entry.seq, entry);
  }
  for (const [seq, held] of entriesBySeq) {
    if (held.length > 1) findings.add("duplicate", `${owner} holds seq ${seq} ${held.length} times (messages ${listed(held.map((entry) => entry.message.messageId))})`);
  }
  for (const [messageId, seqs] of seqsByMessageId) {
    const distinct = new Set(seqs);
    if (distinct.size > 1) findings.add("duplicate", `${owner} holds message ${messageId} ${distinct.size} times, at seqs ${formatSeqs([...distinct])}`);
  }
  for (const [eventId, seqs] of seqsByEventId) {
    const distinct = [...new Set(seqs)];
    const messageIds = new Set(distinct.map((seq) => bySeq.get(seq)?.message.messageId));
    // Appends are idempotent per (user, eventId); the same message twice is reported above already.
    if (distinct.length > 1 && messageIds.size > 1) findings.add("duplicate", `${owner} holds event ${eventId} ${distinct.length} times, at seqs ${formatSeqs(distinct)}`);
  }
  const seqs = [...bySeq.keys(), ...(mailbox.otherEventSeqs ?? [])];
  const missing = missingRanges(seqs, mailbox.floorSeq + 1, mailbox.lastSeq);
  const outside = seqs.filter((seq) => seq <= mailbox.floorSeq || seq > mailbox.lastSeq);
  if (missing.count > 0 || outside.length > 0) {
    const parts = [
      missing.count > 0 ? `lacks ${missing.count} seqs: ${missing.text}` : undefined,
      outside.length > 0 ? `holds seqs ${formatSeqs(outside)} outside its range` : undefined,
    ];
    findings.add("gap", `${owner} (floor ${mailbox.floorSeq}, last ${mailbox.lastSeq}) ${parts.filter((part) => part !== undefined).join(" and ")}`);
  }
  const byConversation = new Map<string, HeldConversation>();
  const reorders = new Notes();
  for (const entry of bySeq.values()) {
    const { message } = entry;
    const conversation = byConversation.get(message.conversationId);
    if (conversation === undefined) {
      byConversation.set(message.conversationId, { messageIds: new Set([message.messageId]), seqMin: message.seq, seqLatest: message.seq });
    } else if (!conversation.messageIds.has(message.messageId)) {
      if (message.seq <= conversation.seqLatest) {
        reorders.add(`conversation ${message.conversationId} seq ${message.seq} at mailbox seq ${entry.seq} after its seq ${conversation.seqLatest}`);
      }
      conversation.messageIds.add(message.messageId);
      conversation.seqMin = Math.min(conversation.seqMin, message.seq);
      conversation.seqLatest = Math.max(conversation.seqLatest, message.seq);
    }
    if (!isMember(index, message.conversationId, mailbox.userId)) index.nonMembers.note(mailbox.userId, message.conversationId, "its mailbox holds", [message.messageId]);
    index.copies.check(message, `${owner} seq ${entry.seq}`);
  }
  if (reorders.count > 0) findings.add("reorder", `${owner} breaks conversation order ${reorders.count} times: ${reorders.text()}`);
  return { mailbox, bySeq, byConversation };
}

/**
 * With a quiescent run: each member's mailbox holds every stored message of each of its conversations.
 * Where retention cut the mailbox (floorSeq > 0), only the messages after the oldest one still held can
 * be required.
 */
function checkMailboxCompleteness(index: RecordIndex, mailboxes: Map<string, MailboxView>, findings: FindingCollector): void {
  for (const [conversationId, messages] of index.storedByConversation) {
    const distinct = distinctById(messages);
    for (const userId of index.membersByConversation.get(conversationId) ?? []) {
      const view = mailboxes.get(userId);
      const held = view?.byConversation.get(conversationId);
      const cut = view !== undefined && view.mailbox.floorSeq > 0;
      if (cut && held === undefined) continue;
      const required = cut && held !== undefined ? distinct.filter((message) => message.seq > held.seqMin) : distinct;
      const lacking = required.filter((message) => held?.messageIds.has(message.messageId) !== true);
      if (lacking.length === 0) continue;
      const where = view === undefined ? "has no mailbox and so lacks" : "lacks";
      findings.add(
        "missing_from_mailbox",
        `user ${userId}, a member of conversation ${conversationId}, ${where} ${lacking.length} of its ${distinct.length} stored messages: ` +
          `seqs ${formatSeqs(lacking.map((message) => message.seq))} (${listed(lacking.map((message) => message.messageId))})`,
      );
    }
  }
}

// --- Devices: each session's stream in mailbox order, gapless, no duplicate; converging on the mailbox --

function checkDevice(device: DeviceDeliveries, index: RecordIndex, mailboxes: Map<string, MailboxView>, expectComplete: boolean, findings: FindingCollector): void {
  const owner = `device ${device.userId}/${device.deviceId}`;
  const countByMessageId = new Map<string, number>();
  const messageIdBySeq = new Map<number, string>();
  const latestByConversation = new Map<string, number>();
  const reorders = new Notes();
  let seqOrdered = 0;
  for (const [position, event] of device.events.entries()) {
    const { message } = event;
    const earlier = messageIdBySeq.get(event.seq);
    if (earlier !== undefined) {
      if (earlier === message.messageId) countByMessageId.set(message.messageId, (countByMessageId.get(message.messageId) ?? 0) + 1);
      else findings.add("duplicate", `${owner} received mailbox seq ${event.seq} twice, as message ${earlier} and then as message ${message.messageId}`);
      continue;
    }
    messageIdBySeq.set(event.seq, message.messageId);
    const count = countByMessageId.get(message.messageId) ?? 0;
    countByMessageId.set(message.messageId, count + 1);
    // A message seen before, at another seq: counted as a duplicate below, and kept out of the order checks.
    if (count > 0) continue;
    if (!isMember(index, message.conversationId, device.userId)) {
      index.nonMembers.note(device.userId, message.conversationId, `device ${device.deviceId} received`, [message.messageId]);
    }
    index.copies.check(message, `${owner} mailbox seq ${event.seq}`);
    const latest = latestByConversation.get(message.conversationId) ?? 0;
    if (event.seq < seqOrdered) reorders.add(`mailbox seq ${event.seq} after ${seqOrdered} (event ${position + 1})`);
    else if (message.seq <= latest) reorders.add(`conversation ${message.conversationId} seq ${message.seq} after its seq ${latest} (event ${position + 1})`);
    seqOrdered = Math.max(seqOrdered, event.seq);
    latestByConversation.set(message.conversationId, Math.max(latest, message.seq));
  }
  for (const [messageId, count] of countByMessageId) {
    if (count > 1) findings.add("duplicate", `${owner} received message ${messageId} ${count} times`);
  }
  if (reorders.count > 0) findings.add("reorder", `${owner} received ${reorders.count} events out of order: ${reorders.text()}`);
  const seqFirst = smallest(messageIdBySeq.keys());
  const seqMax = largest(messageIdBySeq.keys());
  if (messageIdBySeq.size > 0) {
    // Seqs of receipts (not recorded as messages) are no gap.
    const otherSeqs = mailboxes.get(device.userId)?.mailbox.otherEventSeqs ?? [];
    const missingInside = missingRanges([...messageIdBySeq.keys(), ...otherSeqs.filter((seq) => seq >= seqFirst && seq <= seqMax)], seqFirst, seqMax);
    if (missingInside.count > 0) findings.add("gap", `${owner} received mailbox seqs ${seqFirst}..${seqMax} but not ${missingInside.count} of them: ${missingInside.text}`);
  }
  checkDeviceAgainstMailbox(device, owner, messageIdBySeq, seqFirst, seqMax, mailboxes.get(device.userId), expectComplete, findings);
}

/**
 * Seqs inside the device's received span that it lacks are gaps, reported once above; here: seqs whose
 * message differs from the mailbox's, seqs the mailbox does not hold, and (quiescent runs) the seqs
 * before or after the span that the device never received.
 */
function checkDeviceAgainstMailbox(
  device: DeviceDeliveries,
  owner: string,
  messageIdBySeq: Map<number, string>,
  seqFirst: number,
  seqMax: number,
  view: MailboxView | undefined,
  expectComplete: boolean,
  findings: FindingCollector,
): void {
  const floorSeq = view?.mailbox.floorSeq ?? 0;
  const lastSeq = view?.mailbox.lastSeq ?? 0;
  const differing = new Notes();
  const absent: number[] = [];
  for (const [seq, messageId] of messageIdBySeq) {
    if (seq <= floorSeq) continue;
    const entry = view?.bySeq.get(seq);
    if (entry === undefined) absent.push(seq);
    else if (entry.message.messageId !== messageId) differing.add(`seq ${seq} is message ${messageId} on the device, ${entry.message.messageId} in the mailbox`);
  }
  const unreceived: number[] = [];
  if (expectComplete) {
    const inferredStartAfterSeq = messageIdBySeq.size > 0 ? seqFirst - 1 : lastSeq;
    const startAfterSeq = Math.max(floorSeq, device.startAfterSeq ?? inferredStartAfterSeq);
    for (const seq of view?.bySeq.keys() ?? []) {
      if (seq <= startAfterSeq || messageIdBySeq.has(seq)) continue;
      if (messageIdBySeq.size > 0 && seq > seqFirst && seq < seqMax) continue;
      unreceived.push(seq);
    }
  }
  if (differing.count === 0 && absent.length === 0 && unreceived.length === 0) return;
  const parts = [
    differing.count > 0 ? `${differing.count} seqs differ (${differing.text()})` : undefined,
    absent.length > 0 ? `it holds seqs ${formatSeqs(absent)} that ${view === undefined ? "no mailbox of the user" : "the mailbox"} lacks` : undefined,
    unreceived.length > 0 ? `it never received seqs ${formatSeqs(unreceived)}` : undefined,
  ];
  findings.add("device_divergence", `${owner} differs from the mailbox of ${device.userId} (last ${lastSeq}): ${parts.filter((part) => part !== undefined).join("; ")}`);
}

// --- Audits gathered across mailboxes and devices, reported once per message or per (user, conversation) -

/** Copies of a message (in mailboxes and on devices) must equal the stored message. */
class CopyAudit {
  private readonly problems = new Map<string, { problem: string; holders: Notes }>();

  constructor(private readonly storedByMessageId: Map<string, Message[]>) {}

  check(copy: Message, holder: string): void {
    const stored = this.storedByMessageId.get(copy.messageId);
    let problem: string | undefined;
    if (stored === undefined) problem = "is stored in no conversation";
    else {
      const fields = stored.some((message) => differingFields(message, copy).length === 0) ? [] : differingFields(stored[0] ?? copy, copy);
      if (fields.length > 0) problem = `differs from the stored copy in ${fields.join(", ")}`;
    }
    if (problem === undefined) return;
    let entry = this.problems.get(copy.messageId);
    if (entry === undefined) {
      entry = { problem, holders: new Notes() };
      this.problems.set(copy.messageId, entry);
    }
    entry.holders.add(holder);
  }

  flush(findings: FindingCollector): void {
    for (const [messageId, { problem, holders }] of this.problems) {
      findings.add("phantom", `message ${messageId}, held by ${holders.count} ${holders.count === 1 ? "copy" : "copies"} (${holders.text()}), ${problem}`);
    }
  }
}

const messageFields = ["conversationId", "messageId", "seq", "senderUserId", "senderDeviceId", "clientMessageId", "body", "sentAtMs"] as const;

function differingFields(left: Message, right: Message): string[] {
  return messageFields.filter((field) => left[field] !== right[field]);
}

/** Messages held or written across a membership boundary, one finding per (user, conversation). */
class NonMemberAudit {
  private readonly crossings = new Map<string, { userId: string; conversationId: string; places: Map<string, Set<string>> }>();

  note(userId: string, conversationId: string, place: string, messageIds: readonly string[]): void {
    const key = JSON.stringify([userId, conversationId]);
    let crossing = this.crossings.get(key);
    if (crossing === undefined) {
      crossing = { userId, conversationId, places: new Map() };
      this.crossings.set(key, crossing);
    }
    const held = crossing.places.get(place) ?? new Set<string>();
    for (const messageId of messageIds) held.add(messageId);
    crossing.places.set(place, held);
  }

  flush(findings: FindingCollector): void {
    for (const { userId, conversationId, places } of this.crossings.values()) {
      const where = [...places].map(([place, messageIds]) => `${place} ${messageIds.size} of its messages (${listed([...messageIds])})`);
      findings.add("non_member_delivery", `user ${userId} is not a member of conversation ${conversationId}, yet ${where.join("; ")}`);
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
    `${record.database.messages.length} stored messages in ${index.storedByConversation.size} conversations, ` +
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

function listed(items: readonly string[]): string {
  const shown = items.slice(0, idsListedMax).join(", ");
  return items.length > idsListedMax ? `${shown} and ${items.length - idsListedMax} more` : shown;
}

function distinctById(messages: readonly Message[]): Message[] {
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

/** Math.min/Math.max spread their arguments on the stack; a long run's seqs would overflow it. */
function smallest(values: Iterable<number>): number {
  let result = Number.POSITIVE_INFINITY;
  for (const value of values) if (value < result) result = value;
  return result === Number.POSITIVE_INFINITY ? 0 : result;
}

function largest(values: Iterable<number>): number {
  let result = 0;
  for (const value of values) if (value > result) result = value;
  return result;
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
