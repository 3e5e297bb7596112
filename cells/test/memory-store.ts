// An in-memory ConversationStore for unit tests: the same contract as the Postgres store (the contract
// suite checks both), without durability. Every method completes its changes before its first await, so
// JavaScript's single thread gives the per-conversation and per-user atomicity the contract asks for.
import { trimToPageBudget } from "../src/store/page-budget.ts";
import { randomUUID } from "node:crypto";
import {
  groupMembersMax,
  joinedEventId,
  type ImportedMailboxEvent,
  type JoinedEvent,
  type ConversationKind,
  type ConversationSummary,
  type DirectoryEntryKind,
  type InventoryKey,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import { advancedPositions, positionsMoved, receiptEventOf, receiptRecipients, type Positions } from "../src/store/receipt-positions.ts";
import {
  compareMigrationKeys,
  frozenForNonMember,
  importRefusal,
  placeholderConversationKind,
  readRefusal,
  writeRefusal,
  type KeyRow,
} from "../src/store/key-state.ts";
import type { KeyState } from "../src/store/schema.ts";
import {
  placeholderCreatorUserId,
  sendKey,
  tombstoneBatchRowsDefault,
  type SendKey,
  type CellStoreStats,
  type ConversationExport,
  type EpochFenced,
  type ExportMailboxInput,
  type ExportMessagesInput,
  type Fenced,
  type FreezeInput,
  type FreezeResult,
  type FrozenKey,
  type ImportPageInput,
  type ImportPageResult,
  type KeyMigrationState,
  type MailboxPageResult,
  type MembersResult,
  type MessagesAfterInput,
  type MessagesAfterResult,
  type MigrationKey,
  type MigrationRefusal,
  type TombstoneInput,
  type TombstoneResult,
  type UnfreezeResult,
} from "../src/store/store.ts";
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
  MailboxPageInput,
  MarkReceiptInput,
  MarkReceiptResult,
  OpenDirectInput,
  DeadLetter,
  DeadLetterInput,
  OutboxAttempts,
  OutboxEntry,
  OutboxFailure,
  OutboxPage,
  OutboxQuery,
  OutboxRetry,
  RedriveSelection,
  StoreLimits,
} from "../src/store/store.ts";

/** The migration columns of a row (schema.ts), the same on conversations and mailboxes. */
type MigrationColumns = { state: KeyState; movingToCellId: string | null; movedEpoch: number | null };

type StoredConversation = MigrationColumns & {
  readonly id: string;
  readonly kind: ConversationKind;
  readonly title: string | null;
  readonly createdByUserId: string;
  readonly createdAtMs: number;
  readonly members: Set<string>;
  /** userId → when the member joined. */
  readonly joinedAtMs: Map<string, number>;
  /** userId → the member's join point (the conversation's last seq when they joined). */
  readonly joinedAfterSeq: Map<string, number>;
  /** Grows with every change of the members. */
  membersVersion: number;
  /** The highest epoch the conversation was written under. */
  ownerEpoch: number;
  readonly messages: Message[];
  /** `${senderUserId}\n${clientMessageId}` → index in messages. */
  readonly byClientMessage: Map<string, number>;
  /** userId → read and delivered positions. */
  readonly positions: Map<string, Positions>;
};

type StoredMailbox = MigrationColumns & {
  /** Random when the row is made, as the column's default in Postgres; the `last` import page sets it. */
  incarnation: string;
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

type StoredOutboxRow = {
  readonly entry: OutboxEntry;
  readonly createdAtMs: number;
  attempts: number;
  nextAttemptAtMs: number;
  lastError: string | null;
};
type StoredDeadLetter = { readonly entry: OutboxEntry; readonly deadLetter: DeadLetter };

export class MemoryConversationStore implements ConversationStore {
  private readonly conversations = new Map<string, StoredConversation>();
  private readonly mailboxes = new Map<string, StoredMailbox>();
  /** Insertion order is id order. */
  private readonly outbox = new Map<number, StoredOutboxRow>();
  /** Insertion order is id order too. */
  private deadLetterRows = new Map<number, StoredDeadLetter>();
  private lastOutboxId = 0;
  private readonly limits: StoreLimits;

  constructor(
    limits: Partial<StoreLimits> = {},
    private readonly clock: () => number = Date.now,
  ) {
    this.limits = {
      groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax),
      tombstoneBatchRowsMax: limits.tombstoneBatchRowsMax ?? tombstoneBatchRowsDefault,
    };
  }

  async appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    // Each append completes before the next starts and nothing awaits in between: one atomic batch.
    const results: AppendMessageResult[] = [];
    for (const input of inputs) results.push(this.appendOne(input));
    return results;
  }

  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    return this.appendOne(input);
  }

  async settledSends(keys: readonly SendKey[]): Promise<ReadonlySet<string>> {
    const stored = new Set<string>();
    for (const key of keys) {
      const conversation = this.conversations.get(key.conversationId);
      const settled =
        conversation === undefined ||
        !conversation.members.has(key.senderUserId) ||
        conversation.byClientMessage.has(`${key.senderUserId}\n${key.clientMessageId}`);
      if (settled) stored.add(sendKey(key));
    }
    return stored;
  }

  private appendOne(input: AppendMessageInput): AppendMessageResult {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    // Members are never removed, so only a member can have sent the message found here.
    const dedupeKey = `${input.senderUserId}\n${input.clientMessageId}`;
    const existingIndex = conversation.byClientMessage.get(dedupeKey);
    const existing = existingIndex === undefined ? undefined : conversation.messages[existingIndex];
    // A repeated send is a read: answered while frozen, not while importing.
    if (existing !== undefined && conversation.state !== "importing") {
      if (existing.body !== input.body) return { outcome: "client_message_id_reused" };
      return { outcome: "stored", message: { ...existing }, deduplicated: true };
    }
    // As in Postgres, the state and the fence answer before the membership check, but for a frozen
    // conversation's non-member (key-state.ts, frozenForNonMember).
    const refusal = admit(conversation, input.epoch);
    if (frozenForNonMember(conversation, refusal, conversation.members.has(input.senderUserId))) return { outcome: "not_a_member" };
    if (refusal !== undefined) return refusal;
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
    return { outcome: "stored", message: { ...message }, deduplicated: false, membersVersion: conversation.membersVersion };
  }

  async messagesAfter(input: MessagesAfterInput): Promise<MessagesAfterResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    const refusal = readRefusal(conversation);
    if (refusal !== undefined) return refusal;
    const joinedAfterSeq = conversation.joinedAfterSeq.get(input.userId);
    if (!conversation.members.has(input.userId) || joinedAfterSeq === undefined) return { outcome: "not_a_member" };
    const afterSeq = input.afterSeq ?? joinedAfterSeq;
    // Seqs are 1..n, so the message with seq s sits at index s - 1.
    const page = conversation.messages.slice(afterSeq, afterSeq + input.limit).map((message) => ({ ...message }));
    return { outcome: "messages", afterSeq, messages: trimToPageBudget(page).kept, headSeq: conversation.messages.length };
  }

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    let conversation = this.conversations.get(input.conversationId);
    let joined: string[] = [];
    if (conversation === undefined) {
      joined = [input.userId, input.peerUserId];
      conversation = this.create(input.conversationId, "direct", null, input.userId, joined, input.epoch);
    } else {
      // A tombstone is kept, so a conversation that moved away is never re-created here.
      const refusal = claim(conversation, input.epoch);
      if (refusal !== undefined) return refusal;
    }
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    return {
      outcome: "conversation",
      conversation: summaryOf(conversation),
      outbox: this.writeJoined(conversation, joined, input.userId, 0),
    };
  }

  async createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    const memberUserIds = new Set([input.creatorUserId, ...input.memberUserIds]);
    if (memberUserIds.size > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    let conversation = this.conversations.get(input.conversationId);
    let joined: string[] = [];
    if (conversation === undefined) {
      joined = [...memberUserIds];
      conversation = this.create(input.conversationId, "group", input.title, input.creatorUserId, memberUserIds, input.epoch);
    } else {
      const refusal = claim(conversation, input.epoch);
      if (refusal !== undefined) return refusal;
    }
    if (conversation.kind !== "group" || !conversation.members.has(input.creatorUserId)) return { outcome: "not_a_member" };
    return {
      outcome: "conversation",
      conversation: summaryOf(conversation),
      outbox: this.writeJoined(conversation, joined, input.creatorUserId, 0),
    };
  }

  async addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    const refusal = claim(conversation, input.epoch);
    if (frozenForNonMember(conversation, refusal, conversation.members.has(input.userId))) return { outcome: "not_a_member" };
    if (refusal !== undefined) return refusal;
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    if (conversation.kind !== "group") return { outcome: "not_a_group" };
    const added = [...new Set(input.userIds.filter((userId) => !conversation.members.has(userId)))];
    if (conversation.members.size + added.length > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    const joinedAtMs = this.clock();
    const joinedAfterSeq = conversation.messages.length;
    for (const userId of added) {
      conversation.members.add(userId);
      conversation.joinedAtMs.set(userId, joinedAtMs);
      conversation.joinedAfterSeq.set(userId, joinedAfterSeq);
    }
    if (added.length > 0) conversation.membersVersion += 1;
    return {
      outcome: "conversation",
      conversation: summaryOf(conversation),
      outbox: this.writeJoined(conversation, added, input.userId, joinedAfterSeq),
    };
  }

  async history(input: HistoryInput): Promise<HistoryResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    const refusal = readRefusal(conversation);
    if (refusal !== undefined) return refusal;
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    // Seqs are 1..n, so the message with seq s sits at index s - 1.
    const end = input.beforeSeq === null ? conversation.messages.length : Math.min(conversation.messages.length, input.beforeSeq - 1);
    const start = Math.max(0, end - input.limit);
    const newestFirst = conversation.messages
      .slice(start, end)
      .map((message) => ({ ...message }))
      .reverse();
    const { kept, trimmed } = trimToPageBudget(newestFirst);
    return { outcome: "history", messages: kept.reverse(), hasMore: trimmed || start > 0 };
  }

  async markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return { outcome: "not_a_member" };
    const refusal = claim(conversation, input.epoch);
    if (frozenForNonMember(conversation, refusal, conversation.members.has(input.userId))) return { outcome: "not_a_member" };
    if (refusal !== undefined) return refusal;
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
      this.outbox.set(entry.id, { entry, createdAtMs, attempts: 0, nextAttemptAtMs: createdAtMs, lastError: null });
      return entry;
    });
    return { outcome: "receipt", ...after, outbox: outbox.map(copyEntry) };
  }

  async members(conversationId: string): Promise<MembersResult> {
    const conversation = this.conversations.get(conversationId);
    if (conversation === undefined) return { outcome: "members", memberUserIds: [], membersVersion: 0 };
    return (
      readRefusal(conversation) ?? {
        outcome: "members",
        memberUserIds: [...conversation.members].sort(),
        membersVersion: conversation.membersVersion,
      }
    );
  }

  async sharedPeers(userId: string, peerUserIds: readonly string[]): Promise<string[]> {
    const shared = new Set<string>();
    for (const conversation of this.conversations.values()) {
      if (!conversation.members.has(userId)) continue;
      for (const peerUserId of peerUserIds) if (conversation.members.has(peerUserId)) shared.add(peerUserId);
    }
    return [...shared].sort();
  }

  async appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    const { userId, eventId, event, epoch } = input;
    let mailbox = this.mailboxes.get(userId);
    const existing = mailbox?.seqByEventId.get(eventId);
    // A repeated event is a read: answered while frozen, not while importing.
    if (existing !== undefined && mailbox?.state !== "importing") return { outcome: "appended", seq: existing, deduplicated: true };
    if (mailbox === undefined) {
      mailbox = newMailbox("active", 0, epoch);
      this.mailboxes.set(userId, mailbox);
    }
    const refusal = admit(mailbox, epoch);
    if (refusal !== undefined) return refusal;
    mailbox.ownerEpoch = epoch;
    mailbox.lastSeq += 1;
    mailbox.events.push({ seq: mailbox.lastSeq, event: structuredClone(event), eventId });
    mailbox.seqByEventId.set(eventId, mailbox.lastSeq);
    return { outcome: "appended", seq: mailbox.lastSeq, deduplicated: false };
  }

  async mailboxPage(input: MailboxPageInput): Promise<MailboxPageResult> {
    const mailbox = this.mailboxes.get(input.userId);
    if (mailbox === undefined) return { outcome: "page", events: [], headSeq: 0, floorSeq: 0, incarnation: null };
    const refusal = readRefusal(mailbox);
    if (refusal !== undefined) return refusal;
    const start = Math.max(0, input.afterSeq - mailbox.floorSeq);
    const events = mailbox.events
      .slice(start, start + input.limit)
      .map(({ seq, event }): SequencedEvent => ({ seq, event: structuredClone(event) }));
    return {
      outcome: "page",
      events: trimToPageBudget(events).kept,
      headSeq: mailbox.lastSeq,
      floorSeq: mailbox.floorSeq,
      incarnation: mailbox.incarnation,
    };
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
    const nowMs = this.clock();
    const writtenBeforeMs = nowMs - query.olderThanMs;
    const entries: OutboxEntry[] = [];
    const retried: OutboxRetry[] = [];
    /** (conversation, recipient) pairs with a row backing off so far, in id order: their later rows are not due. */
    const waitingPairs = new Set<string>();
    for (const row of this.outbox.values()) {
      if (entries.length >= query.limit) break;
      const pair = `${row.entry.conversationId}\n${row.entry.recipientUserId}`;
      const backingOff = row.nextAttemptAtMs > nowMs;
      if (backingOff) waitingPairs.add(pair);
      if (row.entry.id <= query.afterId || row.createdAtMs > writtenBeforeMs) continue;
      if (query.conversationId !== undefined && row.entry.conversationId !== query.conversationId) continue;
      if (query.dueOnly === true && waitingPairs.has(pair)) continue;
      entries.push(copyEntry(row.entry));
      if (row.attempts > 0) retried.push({ id: row.entry.id, attempts: row.attempts, backingOff });
    }
    return { entries, malformed: [], lastId: entries.at(-1)?.id, retried };
  }

  async deleteOutbox(ids: readonly number[]): Promise<void> {
    for (const id of ids) this.outbox.delete(id);
  }

  async markOutboxAttempt(failures: readonly OutboxFailure[]): Promise<OutboxAttempts[]> {
    const counted: OutboxAttempts[] = [];
    for (const { id, retryAfterMs, error } of failures) {
      const row = this.outbox.get(id);
      if (row === undefined) continue;
      row.attempts += 1;
      row.nextAttemptAtMs = this.clock() + retryAfterMs;
      row.lastError = error;
      counted.push({ id, attempts: row.attempts });
    }
    return counted;
  }

  async deadLetterOutbox(input: DeadLetterInput): Promise<number> {
    let moved = 0;
    const deadLetteredAtMs = this.clock();
    for (const [id, row] of this.outbox) {
      if (row.entry.conversationId !== input.conversationId || row.entry.recipientUserId !== input.recipientUserId) continue;
      this.outbox.delete(id);
      const { entry } = row;
      this.deadLetterRows.set(id, {
        entry,
        deadLetter: {
          id,
          conversationId: entry.conversationId,
          recipientUserId: entry.recipientUserId,
          eventId: entry.eventId,
          attempts: row.attempts,
          lastError: row.lastError ?? input.reason,
          createdAtMs: row.createdAtMs,
          deadLetteredAtMs,
        },
      });
      moved += 1;
    }
    this.deadLetterRows = new Map([...this.deadLetterRows].sort(([left], [right]) => left - right));
    return moved;
  }

  async deadLetteredRecipients(conversationId: string): Promise<string[]> {
    const recipients = new Set<string>();
    for (const { entry } of this.deadLetterRows.values())
      if (entry.conversationId === conversationId) recipients.add(entry.recipientUserId);
    return [...recipients].sort();
  }

  async deadLetters(query: { readonly afterId: number; readonly limit: number }): Promise<DeadLetter[]> {
    return [...this.deadLetterRows.values()]
      .filter(({ deadLetter }) => deadLetter.id > query.afterId)
      .slice(0, query.limit)
      .map(({ deadLetter }) => ({ ...deadLetter }));
  }

  async redriveDeadLetters(selection: RedriveSelection): Promise<number[]> {
    const rows = [...this.deadLetterRows.values()];
    const selected =
      "ids" in selection
        ? rows.filter(({ deadLetter }) => selection.ids.includes(deadLetter.id))
        : "conversationId" in selection
          ? rows.filter(({ entry }) => entry.conversationId === selection.conversationId)
          : rows.slice(0, selection.limit);
    const pairs = new Set(selected.map(({ entry }) => `${entry.conversationId}\n${entry.recipientUserId}`));
    const nowMs = this.clock();
    const redriven: number[] = [];
    for (const { entry, deadLetter } of rows) {
      if (!pairs.has(`${entry.conversationId}\n${entry.recipientUserId}`)) continue;
      this.deadLetterRows.delete(entry.id);
      const again = [...this.outbox.values()].some(
        (row) => row.entry.recipientUserId === entry.recipientUserId && row.entry.eventId === entry.eventId,
      );
      if (again) continue;
      this.outbox.set(entry.id, { entry, createdAtMs: deadLetter.createdAtMs, attempts: 0, nextAttemptAtMs: nowMs, lastError: null });
      redriven.push(entry.id);
    }
    // Outbox reads go in id order, which the map keeps as insertion order.
    const sorted = [...this.outbox].sort(([left], [right]) => left - right);
    this.outbox.clear();
    for (const [id, row] of sorted) this.outbox.set(id, row);
    return redriven;
  }

  async migrationState(key: MigrationKey): Promise<KeyMigrationState | undefined> {
    const row = this.row(key);
    if (row === undefined) return undefined;
    const { state, movingToCellId, movedEpoch } = row;
    if ("messages" in row) {
      return {
        state,
        movingToCellId,
        movedEpoch,
        lastSeq: row.messages.length,
        floorSeq: 0,
        placeholder: isPlaceholder(row),
        incarnation: null,
      };
    }
    return {
      state,
      movingToCellId,
      movedEpoch,
      lastSeq: row.lastSeq,
      floorSeq: row.floorSeq,
      placeholder: false,
      incarnation: row.incarnation,
    };
  }

  async freeze(input: FreezeInput): Promise<FreezeResult> {
    let row = this.row(input);
    if (row === undefined) {
      // An empty frozen mailbox, or a placeholder conversation, so that the move leaves a tombstone here.
      if (input.kind === "conversation") {
        row = this.create(input.id, placeholderConversationKind(input.id), null, placeholderCreatorUserId, [], input.epoch);
      } else {
        row = newMailbox("active", 0, input.epoch);
        this.mailboxes.set(input.id, row);
      }
    }
    const refusal = writeRefusal(row, input.epoch);
    // Freezing again (a retried move, possibly toward another cell) is allowed.
    if (refusal !== undefined && !(refusal.outcome === "moving" && row.state === "frozen")) return refusal;
    row.ownerEpoch = input.epoch;
    row.state = "frozen";
    row.movingToCellId = input.toCellId;
    if ("messages" in row)
      return { outcome: "frozen", lastSeq: row.messages.length, floorSeq: 0, placeholder: isPlaceholder(row), incarnation: null };
    return { outcome: "frozen", lastSeq: row.lastSeq, floorSeq: row.floorSeq, placeholder: false, incarnation: row.incarnation };
  }

  async unfreeze(input: EpochFenced & MigrationKey): Promise<UnfreezeResult> {
    const row = this.row(input);
    if (row === undefined) return { outcome: "not_found" };
    const refusal = writeRefusal(row, input.epoch);
    if (refusal !== undefined && !(refusal.outcome === "moving" && row.state === "frozen")) return refusal;
    if ("messages" in row && isPlaceholder(row)) {
      this.conversations.delete(row.id);
      return { outcome: "active" };
    }
    row.ownerEpoch = input.epoch;
    row.state = "active";
    row.movingToCellId = null;
    return { outcome: "active" };
  }

  async frozenKeys(limit: number, after?: MigrationKey): Promise<FrozenKey[]> {
    const byId = (left: string, right: string): number => (left < right ? -1 : left > right ? 1 : 0);
    const conversations = [...this.conversations.values()]
      .filter((row) => row.state === "frozen")
      .map((row): FrozenKey => ({ kind: "conversation", id: row.id, movingToCellId: row.movingToCellId }))
      .sort((left, right) => byId(left.id, right.id));
    const users = [...this.mailboxes.entries()]
      .filter(([, row]) => row.state === "frozen")
      .map(([id, row]): FrozenKey => ({ kind: "user", id, movingToCellId: row.movingToCellId }))
      .sort((left, right) => byId(left.id, right.id));
    const listed = [...conversations, ...users];
    const start = after === undefined ? 0 : listed.findIndex((key) => compareMigrationKeys(key, after) > 0);
    return start === -1 ? [] : listed.slice(start, start + limit);
  }

  async inventory(kind: DirectoryEntryKind, afterId: string, limit: number): Promise<InventoryKey[]> {
    const rows: [string, MigrationColumns][] = kind === "user" ? [...this.mailboxes.entries()] : [...this.conversations.entries()];
    return rows
      .filter(([id]) => id > afterId)
      .sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0))
      .slice(0, limit)
      .map(([id, row]) => ({ id, state: row.state, movingToCellId: row.movingToCellId, movedEpoch: row.movedEpoch }));
  }

  async exportMailbox(input: ExportMailboxInput): Promise<ImportedMailboxEvent[]> {
    const mailbox = this.mailboxes.get(input.userId);
    if (mailbox === undefined) return [];
    const start = Math.max(0, input.afterSeq - mailbox.floorSeq);
    const events = mailbox.events
      .slice(start, start + input.limit)
      .map(({ seq, eventId, event }) => ({ seq, eventId, event: structuredClone(event) }));
    return trimToPageBudget(events).kept;
  }

  async exportConversation(conversationId: string): Promise<ConversationExport | undefined> {
    const conversation = this.conversations.get(conversationId);
    if (conversation === undefined || isPlaceholder(conversation)) return undefined;
    const { kind, title, createdByUserId, createdAtMs } = conversation;
    const members = [...conversation.members].sort().map((userId) => {
      const positions = conversation.positions.get(userId) ?? { readSeq: 0, deliveredSeq: 0 };
      return {
        userId,
        joinedAtMs: conversation.joinedAtMs.get(userId) ?? createdAtMs,
        joinedAfterSeq: conversation.joinedAfterSeq.get(userId) ?? 0,
        readSeq: positions.readSeq,
        deliveredSeq: positions.deliveredSeq,
      };
    });
    return { conversation: { kind, title, createdByUserId, createdAtMs }, members };
  }

  async exportMessages(input: ExportMessagesInput): Promise<Message[]> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) return [];
    const start = Math.max(0, input.afterSeq);
    return trimToPageBudget(conversation.messages.slice(start, start + input.limit).map((message) => ({ ...message }))).kept;
  }

  async importPage(input: ImportPageInput): Promise<ImportPageResult> {
    const current = this.row(input);
    const refusal = input.first
      ? current !== undefined && (current.state === "active" || current.state === "frozen" || current.ownerEpoch > input.epoch)
        ? importRefusal(current, input.epoch, true)
        : undefined
      : current === undefined || current.state !== "importing" || current.ownerEpoch > input.epoch
        ? importRefusal(current, input.epoch, false)
        : undefined;
    if (refusal !== undefined) return refusal;
    if (input.kind === "user") {
      let mailbox = this.mailboxes.get(input.id);
      if (input.first || mailbox === undefined) {
        // As in Postgres, the row replaced (a tombstone) keeps its incarnation until the `last` page.
        mailbox = newMailbox("importing", input.floorSeq, input.epoch, mailbox?.incarnation);
        this.mailboxes.set(input.id, mailbox);
      }
      mailbox.ownerEpoch = input.epoch;
      for (const entry of input.events) {
        // Pages come in seq order; an event already copied (a retried page) is kept.
        if (entry.seq <= mailbox.lastSeq) continue;
        if (entry.seq !== mailbox.lastSeq + 1) throw new RangeError(`import of ${input.id}: event ${entry.seq} after ${mailbox.lastSeq}`);
        mailbox.events.push({ seq: entry.seq, eventId: entry.eventId, event: structuredClone(entry.event) });
        mailbox.seqByEventId.set(entry.eventId, entry.seq);
        mailbox.lastSeq = entry.seq;
      }
      if (!input.last) return { outcome: "importing" };
      mailbox.state = "active";
      mailbox.lastSeq = input.lastSeq;
      if (input.incarnation !== undefined) mailbox.incarnation = input.incarnation;
      return { outcome: "active" };
    }
    let conversation = this.conversations.get(input.id);
    if (input.first || conversation === undefined) {
      const description = input.conversation;
      // The request handler refuses a first conversation page without its description.
      if (description === null) throw new RangeError(`the first import page of ${input.id} has no conversation`);
      this.deleteOutboxOf(input.id);
      // The version this cell gave out before the key left stays below the one it activates with.
      const membersVersionBefore = conversation?.membersVersion ?? 0;
      conversation = this.create(
        input.id,
        description.kind,
        description.title,
        description.createdByUserId,
        [],
        input.epoch,
        description.createdAtMs,
      );
      conversation.membersVersion = membersVersionBefore;
      conversation.state = "importing";
    }
    conversation.ownerEpoch = input.epoch;
    for (const member of input.members) {
      if (!conversation.members.has(member.userId)) {
        conversation.members.add(member.userId);
        conversation.joinedAtMs.set(member.userId, member.joinedAtMs);
        conversation.joinedAfterSeq.set(member.userId, member.joinedAfterSeq);
      }
      // Members come again after the freeze (the copy before it ran while receipts still moved): positions only grow.
      if (member.readSeq > 0 || member.deliveredSeq > 0) {
        const held = conversation.positions.get(member.userId);
        conversation.positions.set(member.userId, {
          readSeq: Math.max(held?.readSeq ?? 0, member.readSeq),
          deliveredSeq: Math.max(held?.deliveredSeq ?? 0, member.deliveredSeq),
        });
      }
    }
    for (const message of input.messages) {
      if (message.seq <= conversation.messages.length) continue;
      if (message.seq !== conversation.messages.length + 1)
        throw new RangeError(`import of ${input.id}: message ${message.seq} after ${conversation.messages.length}`);
      conversation.byClientMessage.set(`${message.senderUserId}\n${message.clientMessageId}`, conversation.messages.length);
      conversation.messages.push({ ...message });
    }
    const createdAtMs = this.clock();
    for (const entry of input.outbox) {
      const pending = [...this.outbox.values()].some(
        (row) => row.entry.recipientUserId === entry.recipientUserId && row.entry.eventId === entry.eventId,
      );
      if (pending) continue;
      this.lastOutboxId += 1;
      const row: OutboxEntry = {
        id: this.lastOutboxId,
        conversationId: input.id,
        recipientUserId: entry.recipientUserId,
        eventId: entry.eventId,
        event: structuredClone(entry.event),
      };
      this.outbox.set(row.id, { entry: row, createdAtMs, attempts: 0, nextAttemptAtMs: createdAtMs, lastError: null });
    }
    if (!input.last) return { outcome: "importing" };
    // Every message up to lastSeq was copied, so the head is the messages' length.
    if (conversation.messages.length !== input.lastSeq)
      throw new RangeError(`import of ${input.id}: ${conversation.messages.length} messages, lastSeq ${input.lastSeq}`);
    conversation.state = "active";
    // Members may have been added while the key lived in another cell: a member list a worker here cached
    // before it left must read as stale (see AppendMessageResult's membersVersion).
    conversation.membersVersion += 1;
    return { outcome: "active" };
  }

  async tombstone(input: TombstoneInput): Promise<TombstoneResult> {
    let row = this.row(input);
    if (row === undefined) {
      if (input.kind === "conversation") return { outcome: "not_found" };
      row = newMailbox("active", 0, input.epoch);
      this.mailboxes.set(input.id, row);
    }
    if (row.ownerEpoch > input.epoch) return fenced;
    if (row.state === "importing") return { outcome: "moving" };
    row.ownerEpoch = input.epoch;
    row.state = "moved";
    row.movingToCellId = input.toCellId;
    row.movedEpoch = input.movedEpoch;
    let deletedRows = 0;
    if ("messages" in row) {
      deletedRows = row.messages.length + row.members.size + row.positions.size + this.deleteOutboxOf(row.id);
      row.messages.length = 0;
      row.byClientMessage.clear();
      row.members.clear();
      row.joinedAtMs.clear();
      row.joinedAfterSeq.clear();
      row.positions.clear();
    } else {
      deletedRows = row.events.length;
      row.events.length = 0;
      row.seqByEventId.clear();
    }
    return { outcome: "moved", deletedRows };
  }

  async stats(): Promise<CellStoreStats> {
    const count = (rows: Iterable<MigrationColumns>, state: KeyState) => [...rows].filter((row) => row.state === state).length;
    return {
      users: count(this.mailboxes.values(), "active"),
      conversations: count(this.conversations.values(), "active"),
      outboxRows: this.outbox.size,
      frozen: count(this.mailboxes.values(), "frozen") + count(this.conversations.values(), "frozen"),
    };
  }

  private row(key: MigrationKey): StoredConversation | StoredMailbox | undefined {
    return key.kind === "user" ? this.mailboxes.get(key.id) : this.conversations.get(key.id);
  }

  /** Deletes a conversation's outbox rows; returns how many. */
  private deleteOutboxOf(conversationId: string): number {
    let deleted = 0;
    for (const [id, row] of this.outbox) {
      if (row.entry.conversationId !== conversationId) continue;
      this.outbox.delete(id);
      deleted += 1;
    }
    return deleted;
  }

  /** Failed relays counted on a row (tests). */
  outboxAttempts(id: number): number | undefined {
    return this.outbox.get(id)?.attempts;
  }

  /** One `joined` outbox row per new member (sorted), as the Postgres store writes them. */
  private writeJoined(
    conversation: StoredConversation,
    joinedUserIds: readonly string[],
    addedByUserId: string,
    afterSeq: number,
  ): OutboxEntry[] {
    const event: JoinedEvent = {
      kind: "joined",
      conversationId: conversation.id,
      conversationKind: conversation.kind,
      title: conversation.title,
      afterSeq,
      addedByUserId,
    };
    const eventId = joinedEventId(event);
    const createdAtMs = this.clock();
    return [...joinedUserIds].sort().map((recipientUserId): OutboxEntry => {
      this.lastOutboxId += 1;
      const entry: OutboxEntry = { id: this.lastOutboxId, conversationId: conversation.id, recipientUserId, eventId, event: { ...event } };
      this.outbox.set(entry.id, { entry, createdAtMs, attempts: 0, nextAttemptAtMs: createdAtMs, lastError: null });
      return copyEntry(entry);
    });
  }

  private create(
    id: string,
    kind: ConversationKind,
    title: string | null,
    createdByUserId: string,
    members: Iterable<string>,
    ownerEpoch: number,
    createdAtMs: number = this.clock(),
  ): StoredConversation {
    const memberSet = new Set(members);
    const conversation: StoredConversation = {
      id,
      kind,
      title,
      createdByUserId,
      createdAtMs,
      members: memberSet,
      joinedAtMs: new Map([...memberSet].map((userId) => [userId, createdAtMs])),
      joinedAfterSeq: new Map([...memberSet].map((userId) => [userId, 0])),
      membersVersion: 0,
      ownerEpoch,
      messages: [],
      byClientMessage: new Map(),
      positions: new Map(),
      state: "active",
      movingToCellId: null,
      movedEpoch: null,
    };
    this.conversations.set(id, conversation);
    return conversation;
  }
}

/** Why a write under `epoch` is refused (key-state.ts); undefined when it may go ahead. */
function admit(row: KeyRow, epoch: number): Fenced | MigrationRefusal | undefined {
  return writeRefusal(row, epoch);
}

/** The fence and the state: raises the row's epoch to `epoch` unless a refusal answers (then nothing changes). */
function claim(row: KeyRow & { ownerEpoch: number }, epoch: number): Fenced | MigrationRefusal | undefined {
  const refusal = writeRefusal(row, epoch);
  if (refusal === undefined) row.ownerEpoch = epoch;
  return refusal;
}

function isPlaceholder(conversation: StoredConversation): boolean {
  return conversation.createdByUserId === placeholderCreatorUserId;
}

function newMailbox(state: KeyState, floorSeq: number, ownerEpoch: number, incarnation: string = randomUUID()): StoredMailbox {
  return {
    incarnation,
    lastSeq: floorSeq,
    floorSeq,
    ownerEpoch,
    events: [],
    seqByEventId: new Map(),
    state,
    movingToCellId: null,
    movedEpoch: null,
  };
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
