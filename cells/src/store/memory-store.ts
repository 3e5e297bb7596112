// An in-memory ConversationStore for unit tests: the same contract as the Postgres store (the contract
// suite checks both), without durability. Every method completes its changes before its first await, so
// JavaScript's single thread gives the per-conversation and per-user atomicity the contract asks for.
import { trimToPageBudget } from "./page-budget.ts";
import { randomUUID } from "node:crypto";
import {
  groupMembersMax,
  messageEventId,
  type ConversationKind,
  type ConversationSummary,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import { advancedPositions, positionsMoved, receiptEventOf, receiptRecipients, type Positions } from "./receipt-positions.ts";
import type {
  AddMembersInput,
  AppendMailboxInput,
  AppendMailboxResult,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  HistoryInput,
  HistoryResult,
  MailboxPage,
  MailboxPageInput,
  MarkReceiptInput,
  MarkReceiptResult,
  OpenDirectInput,
  OutboxEntry,
  OutboxPage,
  OutboxQuery,
  StoreLimits,
} from "./store.ts";

type StoredConversation = {
  readonly id: string;
  readonly kind: ConversationKind;
  readonly title: string | null;
  readonly members: Set<string>;
  /** The highest epoch the conversation was written under. */
  ownerEpoch: number;
  readonly messages: Message[];
  /** `${senderUserId}\n${clientMessageId}` → index in messages. */
  readonly byClientMessage: Map<string, number>;
  /** userId → read and delivered positions. */
  readonly positions: Map<string, Positions>;
};

type StoredMailbox = {
  lastSeq: number;
  /** The highest epoch an append was made under. */
  ownerEpoch: number;
  floorSeq: number;
  /** Ascending seq; the event with seq s sits at index s - floorSeq - 1. */
  readonly events: (SequencedEvent & { readonly eventId: string })[];
  /** eventId → seq of the events above the floor (as the Postgres unique key, trimmed events are forgotten). */
  readonly seqByEventId: Map<string, number>;
};

const fenced = { outcome: "fenced" } as const;

type StoredOutboxRow = { readonly entry: OutboxEntry; readonly createdAtMs: number; attempts: number };

export class MemoryConversationStore implements ConversationStore {
  private readonly conversations = new Map<string, StoredConversation>();
  private readonly mailboxes = new Map<string, StoredMailbox>();
  /** Insertion order is id order. */
  private readonly outbox = new Map<number, StoredOutboxRow>();
  private lastOutboxId = 0;
  private readonly limits: StoreLimits;

  constructor(limits: Partial<StoreLimits> = {}, private readonly clock: () => number = Date.now) {
    this.limits = { groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax) };
  }

  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    // Members are never removed, so only a member can have sent the message found here.
    const dedupeKey = `${input.senderUserId}\n${input.clientMessageId}`;
    const existingIndex = conversation.byClientMessage.get(dedupeKey);
    const existing = existingIndex === undefined ? undefined : conversation.messages[existingIndex];
    if (existing !== undefined) return { outcome: "stored", message: { ...existing }, deduplicated: true, outbox: [] };
    // As in Postgres, the fence answers before the membership check.
    if (conversation.ownerEpoch > input.epoch) return fenced;
    if (!conversation.members.has(input.senderUserId)) return { outcome: "not_a_member" };
    conversation.ownerEpoch = input.epoch;
    const message: Message = {
      conversationId: conversation.id,
      messageId: randomUUID(),
      seq: conversation.messages.length + 1,
      senderUserId: input.senderUserId,
      senderDeviceId: input.senderDeviceId,
      clientMessageId: input.clientMessageId,
      body: input.body,
      sentAtMs: this.clock(),
    };
    conversation.byClientMessage.set(dedupeKey, conversation.messages.length);
    conversation.messages.push(message);
    const createdAtMs = this.clock();
    const outbox = [...conversation.members].sort().map((recipientUserId): OutboxEntry => {
      this.lastOutboxId += 1;
      const entry: OutboxEntry = {
        id: this.lastOutboxId,
        conversationId: conversation.id,
        recipientUserId,
        eventId: messageEventId(message.messageId),
        event: { kind: "message", message: { ...message } },
      };
      this.outbox.set(entry.id, { entry, createdAtMs, attempts: 0 });
      return entry;
    });
    return { outcome: "stored", message: { ...message }, deduplicated: false, outbox: outbox.map(copyEntry) };
  }

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    let conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) {
      conversation = this.create(input.conversationId, "direct", null, [input.userId, input.peerUserId], input.epoch);
    } else if (!claim(conversation, input.epoch)) {
      return fenced;
    }
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    const memberUserIds = new Set([input.creatorUserId, ...input.memberUserIds]);
    if (memberUserIds.size > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    let conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) {
      conversation = this.create(input.conversationId, "group", input.title, memberUserIds, input.epoch);
    } else if (!claim(conversation, input.epoch)) {
      return fenced;
    }
    if (conversation.kind !== "group" || !conversation.members.has(input.creatorUserId)) return { outcome: "not_a_member" };
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    if (!claim(conversation, input.epoch)) return fenced;
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    if (conversation.kind !== "group") return { outcome: "not_a_group" };
    const added = input.userIds.filter((userId) => !conversation.members.has(userId));
    if (conversation.members.size + new Set(added).size > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    for (const userId of added) conversation.members.add(userId);
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async history(input: HistoryInput): Promise<HistoryResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined || !conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    // Seqs are 1..n, so the message with seq s sits at index s - 1.
    const end = input.beforeSeq === null ? conversation.messages.length : Math.min(conversation.messages.length, input.beforeSeq - 1);
    const start = Math.max(0, end - input.limit);
    const newestFirst = conversation.messages.slice(start, end).map((message) => ({ ...message })).reverse();
    const { kept, trimmed } = trimToPageBudget(newestFirst);
    return { outcome: "history", messages: kept.reverse(), hasMore: trimmed || start > 0 };
  }

  async markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    if (!claim(conversation, input.epoch)) return fenced;
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    if (input.seq > conversation.messages.length) return { outcome: "seq_beyond_last", lastSeq: conversation.messages.length };
    const before = conversation.positions.get(input.userId) ?? { readSeq: 0, deliveredSeq: 0 };
    const after = advancedPositions(before, input.position, input.seq);
    if (!positionsMoved(before, after)) return { outcome: "receipt", ...before, outbox: [] };
    conversation.positions.set(input.userId, after);
    const { eventId, event } = receiptEventOf(conversation.id, input.userId, after);
    const createdAtMs = this.clock();
    const recipients = receiptRecipients([...conversation.members], input.userId, after.readSeq !== before.readSeq, input.fanOutMembersMax);
    const outbox = recipients.map((recipientUserId): OutboxEntry => {
      this.lastOutboxId += 1;
      const entry: OutboxEntry = { id: this.lastOutboxId, conversationId: conversation.id, recipientUserId, eventId, event: { ...event } };
      this.outbox.set(entry.id, { entry, createdAtMs, attempts: 0 });
      return entry;
    });
    return { outcome: "receipt", ...after, outbox: outbox.map(copyEntry) };
  }

  async members(conversationId: string): Promise<string[]> {
    const conversation = this.conversations.get(conversationId);
    return conversation === undefined ? [] : [...conversation.members].sort();
  }

  async appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    const { userId, eventId, event, epoch } = input;
    let mailbox = this.mailboxes.get(userId);
    const existing = mailbox?.seqByEventId.get(eventId);
    if (existing !== undefined) return { outcome: "appended", seq: existing, deduplicated: true };
    if (mailbox === undefined) {
      mailbox = { lastSeq: 0, floorSeq: 0, ownerEpoch: epoch, events: [], seqByEventId: new Map() };
      this.mailboxes.set(userId, mailbox);
    }
    if (mailbox.ownerEpoch > epoch) return fenced;
    mailbox.ownerEpoch = epoch;
    mailbox.lastSeq += 1;
    mailbox.events.push({ seq: mailbox.lastSeq, event: structuredClone(event), eventId });
    mailbox.seqByEventId.set(eventId, mailbox.lastSeq);
    return { outcome: "appended", seq: mailbox.lastSeq, deduplicated: false };
  }

  async mailboxPage(input: MailboxPageInput): Promise<MailboxPage> {
    const mailbox = this.mailboxes.get(input.userId);
    if (mailbox === undefined) return { events: [], headSeq: 0, floorSeq: 0 };
    const start = Math.max(0, input.afterSeq - mailbox.floorSeq);
    const events = mailbox.events.slice(start, start + input.limit).map(({ seq, event }): SequencedEvent => ({ seq, event: structuredClone(event) }));
    return { events: trimToPageBudget(events).kept, headSeq: mailbox.lastSeq, floorSeq: mailbox.floorSeq };
  }

  async trimMailbox(userId: string, throughSeq: number): Promise<number> {
    const mailbox = this.mailboxes.get(userId);
    if (mailbox === undefined) return 0;
    const floorSeq = Math.max(mailbox.floorSeq, Math.min(throughSeq, mailbox.lastSeq));
    for (const trimmed of mailbox.events.splice(0, floorSeq - mailbox.floorSeq)) mailbox.seqByEventId.delete(trimmed.eventId);
    mailbox.floorSeq = floorSeq;
    return floorSeq;
  }

  async pendingOutbox(query: OutboxQuery): Promise<OutboxPage> {
    const writtenBeforeMs = this.clock() - query.olderThanMs;
    const entries: OutboxEntry[] = [];
    for (const row of this.outbox.values()) {
      if (entries.length >= query.limit) break;
      if (row.entry.id <= query.afterId || row.createdAtMs > writtenBeforeMs) continue;
      if (query.conversationId !== undefined && row.entry.conversationId !== query.conversationId) continue;
      entries.push(copyEntry(row.entry));
    }
    return { entries, malformed: [], lastId: entries.at(-1)?.id };
  }

  async deleteOutbox(ids: readonly number[]): Promise<void> {
    for (const id of ids) this.outbox.delete(id);
  }

  async markOutboxAttempt(ids: readonly number[]): Promise<void> {
    for (const id of ids) {
      const row = this.outbox.get(id);
      if (row !== undefined) row.attempts += 1;
    }
  }

  /** Failed relays counted on a row (tests). */
  outboxAttempts(id: number): number | undefined {
    return this.outbox.get(id)?.attempts;
  }

  private create(id: string, kind: ConversationKind, title: string | null, members: Iterable<string>, ownerEpoch: number): StoredConversation {
    const conversation: StoredConversation = { id, kind, title, members: new Set(members), ownerEpoch, messages: [], byClientMessage: new Map(), positions: new Map() };
    this.conversations.set(id, conversation);
    return conversation;
  }
}

/** The fence: raises the conversation's epoch to `epoch` unless it was written under a later one. */
function claim(conversation: StoredConversation, epoch: number): boolean {
  if (conversation.ownerEpoch > epoch) return false;
  conversation.ownerEpoch = epoch;
  return true;
}

function copyEntry(entry: OutboxEntry): OutboxEntry {
  return { ...entry, event: structuredClone(entry.event) };
}

function summaryOf(conversation: StoredConversation): ConversationSummary {
  return {
    conversationId: conversation.id,
    kind: conversation.kind,
    title: conversation.title,
    memberUserIds: [...conversation.members].sort(),
    lastSeq: conversation.messages.length,
  };
}
