// The contract of a cell's storage: conversations, the mailboxes of the users homed in the cell, and the
// outbox of mailbox events still to be applied. Two implementations: Postgres (production) and memory
// (unit tests of the request handler and the relay); one contract suite (store-contract.ts) runs against both.
import type { ConversationSummary, MailboxEvent, Message, SequencedEvent } from "@cellwire/protocol";

/** Expected refusals, returned as values because the caller branches on them (never thrown). */
export type StoreRefusal = "not_a_member" | "not_a_group" | "too_many_members" | "invalid_peer";

/**
 * A write refused because the conversation or mailbox was already written under a later ring epoch: the
 * writer is a stale owner (paused past its lease, or behind on the membership watch) and MUST NOT retry it
 * itself; the request is routed again to the current owner.
 */
export type Fenced = { readonly outcome: "fenced" };

/**
 * The ring epoch a write is made under (MembershipSnapshot.epoch of the writer). Each conversation and
 * mailbox row keeps the highest epoch it was written with; a write with a lower one changes nothing and
 * answers `fenced`, a write with an equal or higher one succeeds and raises the row's epoch to it.
 */
export type EpochFenced = { readonly epoch: number };

export type AppendMessageInput = EpochFenced & {
  readonly conversationId: string;
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly clientMessageId: string;
  readonly body: string;
};

/** A mailbox event waiting in the outbox to be applied at its recipient's mailbox owner. */
export type OutboxEntry = {
  /** Grows with each row written: rows of one conversation in id order are its messages in seq order. */
  readonly id: number;
  readonly conversationId: string;
  readonly recipientUserId: string;
  readonly eventId: string;
  readonly event: MailboxEvent;
};

/**
 * `deduplicated` is true when (conversation, sender, clientMessageId) was stored before: the stored
 * message comes back unchanged (same messageId, seq and body) and nothing new is written. `outbox` holds
 * the rows written with a new message (one per member, the sender included, in id order); empty when
 * deduplicated.
 */
export type AppendMessageResult =
  | { readonly outcome: "stored"; readonly message: Message; readonly deduplicated: boolean; readonly outbox: readonly OutboxEntry[] }
  | { readonly outcome: "not_a_member" }
  | Fenced;

export type ConversationResult<Refusal extends StoreRefusal> =
  | { readonly outcome: "conversation"; readonly conversation: ConversationSummary }
  | { readonly outcome: Refusal }
  | Fenced;

export type OpenDirectInput = EpochFenced & { readonly conversationId: string; readonly userId: string; readonly peerUserId: string };
export type CreateGroupInput = EpochFenced & {
  readonly conversationId: string;
  readonly creatorUserId: string;
  readonly title: string;
  readonly memberUserIds: readonly string[];
};
export type AddMembersInput = EpochFenced & { readonly conversationId: string; readonly userId: string; readonly userIds: readonly string[] };
export type HistoryInput = {
  readonly conversationId: string;
  readonly userId: string;
  /** Only messages with seq below this; null for the newest. */
  readonly beforeSeq: number | null;
  readonly limit: number;
};
export type HistoryResult =
  | { readonly outcome: "history"; readonly messages: Message[]; readonly hasMore: boolean }
  | { readonly outcome: "not_a_member" };

export type AppendMailboxInput = EpochFenced & { readonly userId: string; readonly eventId: string; readonly event: MailboxEvent };
/** `deduplicated`: the event was in the mailbox already and `seq` is the one it got then. */
export type AppendMailboxResult = { readonly outcome: "appended"; readonly seq: number; readonly deduplicated: boolean } | Fenced;

/** Raises `userId`'s read position (and delivered with it) or delivered position in the conversation to `seq`. */
export type MarkReceiptInput = EpochFenced & {
  readonly conversationId: string;
  readonly userId: string;
  readonly position: "read" | "delivered";
  readonly seq: number;
  /** Above this many members, the receipt event goes only to the reader's own mailbox. */
  readonly fanOutMembersMax: number;
};

/**
 * The positions after the request. `outbox` holds the receipt rows written with an advance (empty when
 * nothing moved: a lower or equal seq writes nothing).
 */
export type MarkReceiptResult =
  | { readonly outcome: "receipt"; readonly readSeq: number; readonly deliveredSeq: number; readonly outbox: readonly OutboxEntry[] }
  | { readonly outcome: "not_a_member" }
  | { readonly outcome: "seq_beyond_last"; readonly lastSeq: number }
  | Fenced;

export type MailboxPageInput = { readonly userId: string; readonly afterSeq: number; readonly limit: number };
/** `headSeq`: the newest event's seq (0 for an empty mailbox); every event up to `floorSeq` was cut. */
export type MailboxPage = { readonly events: SequencedEvent[]; readonly headSeq: number; readonly floorSeq: number };

export type OutboxQuery = {
  /** Only rows written at least this long ago (0 for all). */
  readonly olderThanMs: number;
  readonly limit: number;
  /** Only rows with a greater id (a cursor over earlier pages); 0 from the start. */
  readonly afterId: number;
  /** Only this conversation's rows. */
  readonly conversationId?: string;
};

/**
 * Rows in id order. A row whose event does not decode (a bug or a schema skew, never expected) is
 * reported in `malformed` instead of stopping the rest; `lastId` is the greatest id read, for the cursor.
 */
export type OutboxPage = {
  readonly entries: OutboxEntry[];
  readonly malformed: { readonly id: number; readonly reason: string }[];
  readonly lastId: number | undefined;
};

export type StoreLimits = {
  /** Members of one group, creator included; at most the protocol's groupMembersMax. */
  readonly groupMembersMax: number;
};

export interface ConversationStore {
  /**
   * Appends a message with the next seq of its conversation, or returns the message already stored for
   * (conversation, sender, clientMessageId). MUST be atomic per conversation: concurrent callers, even on
   * different workers, never produce a gap or a repeated seq. A conversation that does not exist answers
   * not_a_member, so a non-member learns nothing about it. A new message is stored only under an epoch at
   * least the conversation's, checked and raised in the same atomic step (else fenced, nothing written);
   * a repeated send answers its stored message whatever the epoch, since it writes nothing.
   */
  appendMessage(input: AppendMessageInput): Promise<AppendMessageResult>;

  /**
   * Finds or creates the direct conversation `conversationId` between the two users (idempotent). When the
   * conversation exists and `userId` is not one of its members, answers not_a_member. Fenced like every
   * conversation write: a new conversation takes the epoch, an existing one must not have a later one.
   */
  openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">>;

  /**
   * Creates a group of creator ∪ memberUserIds. A retry with the same id returns the group as it is
   * (idempotent); an id taken by a conversation the creator is not in answers not_a_member. Fenced.
   */
  createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">>;

  /** Adds users to a group `userId` belongs to; users already in it are ignored. Fenced. */
  addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">>;

  /** The newest `limit` messages with seq < beforeSeq, oldest first; `hasMore` says older ones exist. */
  history(input: HistoryInput): Promise<HistoryResult>;

  /**
   * Raises a member's read or delivered position (monotonic: never lowers; read raises delivered to at
   * least itself). A seq beyond the conversation's last answers seq_beyond_last; a non-member (or no such
   * conversation) not_a_member. Fenced like every conversation write. When a position advances, one
   * receipt outbox row per recipient is written atomically with it: every member when the conversation
   * has at most fanOutMembersMax members, else only the user; a delivered-only advance skips the user's
   * own mailbox (their devices need not learn their own delivered position).
   */
  markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult>;

  /** The conversation's members, sorted; empty when it does not exist. */
  members(conversationId: string): Promise<string[]>;

  /**
   * Appends an event to a user's mailbox with the user's next seq (1 for a new mailbox), or returns the
   * seq it already has (idempotent per (userId, eventId) while the event is above the floor). MUST be
   * atomic per user: concurrent callers, even on different workers, never produce a gap or a repeated seq.
   * A new event is appended only under an epoch at least the mailbox's (else fenced, nothing written).
   */
  appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult>;

  /**
   * Events with seq > afterSeq in ascending order: at most `limit`, and no more than fit
   * historyPageBytesMax once encoded (always at least one when any exists).
   */
  mailboxPage(input: MailboxPageInput): Promise<MailboxPage>;

  /**
   * Retention: drops the events up to `throughSeq` (at most the head) and raises the floor to it; returns
   * the floor. A floor never goes down.
   */
  trimMailbox(userId: string, throughSeq: number): Promise<number>;

  pendingOutbox(query: OutboxQuery): Promise<OutboxPage>;

  /** Deletes outbox rows whose events were applied; ids not found are ignored. */
  deleteOutbox(ids: readonly number[]): Promise<void>;

  /** Counts one more failed relay on each row. */
  markOutboxAttempt(ids: readonly number[]): Promise<void>;
}
