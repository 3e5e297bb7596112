// The contract of a cell's storage: conversations, the mailboxes of the users homed in the cell, and the
// outbox of mailbox events still to be applied. Two implementations: Postgres (production) and memory
// (cells/test/, for unit tests of the request handler and the relay); one contract suite (cells/test/store-contract.ts) runs against both.
import type {
  ConversationSummary,
  DirectoryEntryKind,
  ImportedConversation,
  ImportedMailboxEvent,
  ImportedMember,
  ImportedOutboxEntry,
  InventoryKey,
  MailboxEvent,
  Message,
  SequencedEvent,
} from "@cellwire/protocol";
import type { KeyState } from "./schema.ts";

export type { KeyState };

/** Expected refusals, returned as values because the caller branches on them (never thrown). */
export type StoreRefusal = "not_a_member" | "not_a_group" | "too_many_members" | "invalid_peer" | "client_message_id_reused";

/**
 * A write refused because the conversation or mailbox was already written under a later ring epoch: the
 * writer is a stale owner (paused past its lease, or behind on the membership watch) and MUST NOT retry it
 * itself; the request is routed again to the current owner.
 */
export type Fenced = { readonly outcome: "fenced" };

/**
 * The key (conversation or mailbox) is migrating between cells: `frozen` here while it is copied out
 * (writes only refuse), or `importing` while a copy comes in (reads refuse too). Retryable: the requester
 * tries again shortly.
 */
export type Moving = { readonly outcome: "moving" };

/**
 * The key moved out of this cell: `cellId` is its new home and `epoch` the directory epoch of the move, as
 * the tombstone recorded them. The requester asks the new home.
 */
export type Moved = { readonly outcome: "moved"; readonly cellId: string; readonly epoch: number };

/** Why a request for a migrating or migrated key was not served. */
export type MigrationRefusal = Moving | Moved;

/**
 * The ring epoch a write is made under (MembershipSnapshot.ringEpoch of the writer). Each conversation and
 * mailbox row keeps the highest epoch it was written with; a write with a lower one changes nothing and
 * answers `fenced`, a write with an equal or higher one succeeds and raises the row's epoch to it.
 */
export type EpochFenced = { readonly epoch: number };

/** What names one send for dedupe: a sender's clientMessageId within a conversation. */
export type SendKey = { readonly conversationId: string; readonly senderUserId: string; readonly clientMessageId: string };

/** One string per SendKey (ids never hold a newline). */
export function sendKey(key: SendKey): string {
  return `${key.conversationId}\n${key.senderUserId}\n${key.clientMessageId}`;
}

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
 * `deduplicated` is true when (conversation, sender, clientMessageId) was stored before with the same
 * body: the stored message comes back unchanged (same messageId, seq and body) and nothing new is
 * written. Stored before with another body, the send is refused `client_message_id_reused` and nothing
 * is written: the id was reused for another message, which keeping the old one would silently lose. A new message
 * carries `membersVersion`, the conversation's member version read under the row lock that gave it its
 * seq: its members are those of that version (the publisher checks its cached list against it). Within
 * one cell a version names one member list: adding a member raises it, and so does the activation of an
 * imported conversation (members may have been added in the cell it came from).
 */
export type AppendMessageResult =
  | { readonly outcome: "stored"; readonly message: Message; readonly deduplicated: false; readonly membersVersion: number }
  | { readonly outcome: "stored"; readonly message: Message; readonly deduplicated: true }
  | { readonly outcome: "not_a_member" }
  | { readonly outcome: "client_message_id_reused" }
  | Fenced
  | MigrationRefusal;

/**
 * `outbox` holds the `joined` mailbox events written for the members this request added (one per new
 * member, in id order; empty when nobody new joined), committed with them.
 */
export type ConversationResult<Refusal extends StoreRefusal> =
  | { readonly outcome: "conversation"; readonly conversation: ConversationSummary; readonly outbox: readonly OutboxEntry[] }
  | { readonly outcome: Refusal }
  | Fenced
  | MigrationRefusal;

export type OpenDirectInput = EpochFenced & { readonly conversationId: string; readonly userId: string; readonly peerUserId: string };
export type CreateGroupInput = EpochFenced & {
  readonly conversationId: string;
  readonly creatorUserId: string;
  readonly title: string;
  readonly memberUserIds: readonly string[];
};
export type AddMembersInput = EpochFenced & {
  readonly conversationId: string;
  readonly userId: string;
  readonly userIds: readonly string[];
};
export type HistoryInput = {
  readonly conversationId: string;
  readonly userId: string;
  /** Only messages with seq below this; null for the newest. */
  readonly beforeSeq: number | null;
  readonly limit: number;
};
export type HistoryResult =
  | { readonly outcome: "history"; readonly messages: Message[]; readonly hasMore: boolean }
  | { readonly outcome: "not_a_member" }
  | MigrationRefusal;

export type AppendMailboxInput = EpochFenced & { readonly userId: string; readonly eventId: string; readonly event: MailboxEvent };
/** `deduplicated`: the event was in the mailbox already and `seq` is the one it got then. */
export type AppendMailboxResult =
  { readonly outcome: "appended"; readonly seq: number; readonly deduplicated: boolean } | Fenced | MigrationRefusal;

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
  | Fenced
  | MigrationRefusal;

export type MailboxPageInput = { readonly userId: string; readonly afterSeq: number; readonly limit: number };
/**
 * `headSeq`: the newest event's seq (0 for an empty mailbox); every event up to `floorSeq` was cut.
 * `incarnation`: the mailbox row's (docs/decisions/0021), null while the user has none.
 */
export type MailboxPage = {
  readonly events: SequencedEvent[];
  readonly headSeq: number;
  readonly floorSeq: number;
  readonly incarnation: string | null;
};
export type MailboxPageResult = ({ readonly outcome: "page" } & MailboxPage) | MigrationRefusal;

/** The conversation's members, sorted, and their version (see AppendMessageResult); empty when it does not exist. */
export type MembersResult =
  { readonly outcome: "members"; readonly memberUserIds: string[]; readonly membersVersion: number } | MigrationRefusal;

/** `afterSeq` null reads from the member's join point. */
export type MessagesAfterInput = {
  readonly conversationId: string;
  readonly userId: string;
  readonly afterSeq: number | null;
  readonly limit: number;
};
/**
 * `afterSeq`: where the page starts (the join point when asked for it); `messages`: seqs afterSeq + 1 on,
 * consecutive, at most `limit` and within historyPageBytesMax (at least one when any exists); `headSeq`:
 * the conversation's last seq in the same snapshot.
 */
export type MessagesAfterResult =
  | { readonly outcome: "messages"; readonly afterSeq: number; readonly messages: Message[]; readonly headSeq: number }
  | { readonly outcome: "not_a_member" }
  | MigrationRefusal;

export type OutboxQuery = {
  /** Only rows written at least this long ago (0 for all). */
  readonly olderThanMs: number;
  readonly limit: number;
  /** Only rows with a greater id (a cursor over earlier pages); 0 from the start. */
  readonly afterId: number;
  /** Only this conversation's rows. */
  readonly conversationId?: string;
  /**
   * Only rows due for a relay (the sweeper's read): not backing off after a failure, and not behind an
   * older row of the same (conversation, recipient) that is (that row must be applied first).
   */
  readonly dueOnly?: boolean;
};

/**
 * Rows in id order. A row whose event does not decode (a bug or a schema skew, never expected) is
 * reported in `malformed` instead of stopping the rest; `lastId` is the greatest id read, for the cursor.
 */
export type OutboxPage = {
  readonly entries: OutboxEntry[];
  readonly malformed: { readonly id: number; readonly reason: string }[];
  readonly lastId: number | undefined;
  /**
   * The entries whose relay failed before (attempts > 0): how often, and whether their next attempt is
   * still to come (`backingOff`, by the store's clock). Rows never tried or redriven are not listed.
   */
  readonly retried: OutboxRetry[];
};

export type OutboxRetry = { readonly id: number; readonly attempts: number; readonly backingOff: boolean };

/** A failed relay of one outbox row: its next attempt waits retryAfterMs (by the store's clock). */
export type OutboxFailure = { readonly id: number; readonly retryAfterMs: number; readonly error: string };

/** The row after markOutboxAttempt counted the failure. */
export type OutboxAttempts = { readonly id: number; readonly attempts: number };

export type DeadLetterInput = {
  readonly conversationId: string;
  readonly recipientUserId: string;
  /** Recorded as the last error of moved rows that have none (rows that waited behind the failing one). */
  readonly reason: string;
};

/** An outbox row that went to the dead letters (docs/decisions/0022), as an operator lists it. */
export type DeadLetter = {
  /** Its outbox id, kept. */
  readonly id: number;
  readonly conversationId: string;
  readonly recipientUserId: string;
  readonly eventId: string;
  readonly attempts: number;
  readonly lastError: string;
  readonly createdAtMs: number;
  readonly deadLetteredAtMs: number;
};

/**
 * Dead letters to move back: these ids, the first `limit` by id, or all of one conversation (a live
 * migration takes them along as outbox rows); either way whole (conversation, recipient) groups.
 */
export type RedriveSelection = { readonly ids: readonly number[] } | { readonly limit: number } | { readonly conversationId: string };

export type StoreLimits = {
  /** Members of one group, creator included; at most the protocol's groupMembersMax. */
  readonly groupMembersMax: number;
  /** Rows one statement of a tombstone deletes, so a large key never holds locks (or a transaction) long. */
  readonly tombstoneBatchRowsMax: number;
};

export const tombstoneBatchRowsDefault = 1000;

// ---------------------------------------------------------------------------------------------------
// Live migration (docs/decisions/0008-live-migration.md). A key is a conversation (kind "conversation",
// id its conversation id) or a user's mailbox (kind "user", id the user id). Every write above answers
// `moving` for a key that is frozen or importing and `moved` for a tombstone; reads (history, members,
// mailboxPage) are served while frozen, answer `moving` while importing and `moved` once moved. The
// state is checked in the statement that takes the row's lock, so a freeze orders with sends and appends.

export type MigrationKey = { readonly kind: DirectoryEntryKind; readonly id: string };

/**
 * The created_by_user_id of a placeholder conversation row: a row the freeze inserts for a conversation
 * placed in this cell by the directory but never created here, so that its move can leave a tombstone (a
 * stale cell.openDirect or cell.createGroup then answers cell.moved instead of creating it here). No user
 * id can equal it (protocol userId has at least one character). A placeholder has no members, messages or
 * outbox rows; it is never exported, and unfreezing it deletes it (the key is back to having no row).
 */
export const placeholderCreatorUserId = "";

/** A key frozen in this cell, for the sweeper that resumes moves whose mover died. */
export type FrozenKey = MigrationKey & { readonly movingToCellId: string | null };

/** A key's row as migration sees it: its state and heads (`floorSeq` is 0 for conversations). */
export type KeyMigrationState = {
  readonly state: KeyState;
  readonly movingToCellId: string | null;
  readonly movedEpoch: number | null;
  readonly lastSeq: number;
  readonly floorSeq: number;
  /** A placeholder conversation row (see placeholderCreatorUserId); always false for a mailbox. */
  readonly placeholder: boolean;
  /** A mailbox's incarnation, which its move carries (docs/decisions/0021); null for a conversation. */
  readonly incarnation: string | null;
};

export type FreezeInput = EpochFenced & MigrationKey & { readonly toCellId: string };
/**
 * The heads cannot change while frozen: the activation in the target cell sets them. `placeholder`: the
 * frozen row is a placeholder conversation (this freeze or an earlier one inserted it; nothing to copy).
 */
export type FreezeResult =
  | {
      readonly outcome: "frozen";
      readonly lastSeq: number;
      readonly floorSeq: number;
      readonly placeholder: boolean;
      readonly incarnation: string | null;
    }
  | Fenced
  | MigrationRefusal;

export type UnfreezeResult = { readonly outcome: "active" } | { readonly outcome: "not_found" } | Fenced | MigrationRefusal;

export type ExportMailboxInput = { readonly userId: string; readonly afterSeq: number; readonly limit: number };
export type ExportMessagesInput = { readonly conversationId: string; readonly afterSeq: number; readonly limit: number };
/** What a conversation's first import page carries: its description and every member with positions. */
export type ConversationExport = { readonly conversation: ImportedConversation; readonly members: ImportedMember[] };

/** One page of a migrating key, as cell.import carries it (see CellImportRequest), under the importer's epoch. */
export type ImportPageInput = EpochFenced &
  (
    | {
        readonly kind: "user";
        readonly id: string;
        readonly first: boolean;
        readonly last: boolean;
        readonly lastSeq: number;
        readonly floorSeq: number;
        readonly events: readonly ImportedMailboxEvent[];
        /** The moved mailbox's, set by the `last` page; undefined keeps the copy's own (see CellImportRequest). */
        readonly incarnation?: string | undefined;
      }
    | {
        readonly kind: "conversation";
        readonly id: string;
        readonly first: boolean;
        readonly last: boolean;
        readonly lastSeq: number;
        readonly conversation: ImportedConversation | null;
        readonly members: readonly ImportedMember[];
        readonly messages: readonly Message[];
        readonly outbox: readonly ImportedOutboxEntry[];
      }
  );

/**
 * `importing`: the page was applied and the key is still importing; `active`: the key is active here,
 * either made so by this (`last`) page or by an earlier attempt (then nothing changed). `not_importing`:
 * a page after the first for a key with no import in progress (its copy was reset or never started).
 */
export type ImportPageResult =
  { readonly outcome: "importing" } | { readonly outcome: "active" } | { readonly outcome: "not_importing" } | Fenced | Moving;

export type TombstoneInput = EpochFenced & MigrationKey & { readonly toCellId: string; readonly movedEpoch: number };
export type TombstoneResult =
  { readonly outcome: "moved"; readonly deletedRows: number } | { readonly outcome: "not_found" } | Fenced | Moving;

/** For cell.stats: what the cell still homes (active keys), its outbox backlog and its frozen keys. */
export type CellStoreStats = {
  readonly users: number;
  readonly conversations: number;
  readonly outboxRows: number;
  readonly frozen: number;
};

export interface MigrationStore {
  /** The key's row, or undefined when this cell has none. */
  migrationState(key: MigrationKey): Promise<KeyMigrationState | undefined>;

  /**
   * Freezes an active (or already frozen) key toward `toCellId`: from the commit on, every write for it
   * answers `moving`. Fenced like a write, in the statement that takes the row lock. A user without a
   * mailbox row gets an empty frozen one, a conversation without a row a frozen placeholder (kind from
   * its id's prefix; see placeholderCreatorUserId), so the move leaves a tombstone. An importing key
   * answers `moving`, a tombstone `moved`.
   */
  freeze(input: FreezeInput): Promise<FreezeResult>;

  /**
   * Makes a frozen key active again (a failed move); an active key stays active; a frozen placeholder
   * conversation is deleted (answered `active`: the key is writable again, with no row). Fenced.
   */
  unfreeze(input: EpochFenced & MigrationKey): Promise<UnfreezeResult>;

  /**
   * Up to `limit` keys frozen in this cell, conversations first, each kind in id order (bytewise), with
   * the cell they are frozen toward; with `after`, only the keys that come after it in that order (a
   * cursor: the sweeper walks every frozen key, not the first `limit` again and again). Reads a partial
   * index of frozen rows only, so it is cheap to poll.
   */
  frozenKeys(limit: number, after?: MigrationKey): Promise<FrozenKey[]>;

  /**
   * Up to `limit` rows of `kind` (mailboxes for `user`, conversations), every state, in id order (bytewise)
   * after `afterId` ("" from the first): what a directory rebuilding its lost store learns from this cell
   * (cell.inventory, docs/decisions/0023). A frozen placeholder conversation is listed like any frozen row.
   */
  inventory(kind: DirectoryEntryKind, afterId: string, limit: number): Promise<InventoryKey[]>;

  /** Mailbox events with seq > afterSeq, ascending with their event ids: at most `limit`, within the page byte budget. */
  exportMailbox(input: ExportMailboxInput): Promise<ImportedMailboxEvent[]>;

  /** The conversation's description and members with their positions (0 for none); undefined for none or a placeholder. */
  exportConversation(conversationId: string): Promise<ConversationExport | undefined>;

  /** Messages with seq > afterSeq, ascending: at most `limit`, within the page byte budget. */
  exportMessages(input: ExportMessagesInput): Promise<Message[]>;

  /**
   * Applies one import page, in one transaction, fenced by the importer's ring epoch. The first page
   * replaces whatever this cell holds of the key unless it is active (a tombstone of an earlier move out,
   * or the copy of an earlier attempt) and makes it `importing`; rows are inserted idempotently (a row
   * already there is kept); the `last` page sets the heads and makes the key active. A key active here
   * answers `active` and changes nothing; a frozen one `moving`.
   */
  importPage(input: ImportPageInput): Promise<ImportPageResult>;

  /**
   * Makes the key a tombstone (state moved, naming its new home and the directory epoch of the move),
   * then deletes its other rows (mailbox events; or messages, members, read positions and outbox rows) in
   * statements of at most tombstoneBatchRowsMax rows. Idempotent: a tombstone is rewritten and whatever
   * rows a cut-short earlier call left are deleted. Fenced; an importing key answers `moving`.
   */
  tombstone(input: TombstoneInput): Promise<TombstoneResult>;

  stats(): Promise<CellStoreStats>;
}

export interface ConversationStore extends MigrationStore {
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
   * appendMessage for many sends in one transaction (group commit), results in input order. Sends to one
   * conversation take consecutive seqs in input order. Every input MUST carry the same epoch, and no two
   * inputs the same (conversation, sender, clientMessageId): the caller answers a repeat with the first's
   * result. All commit together or none does (the call throws).
   */
  appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]>;

  /**
   * Which of these sends can no longer hold up a later send, as sendKey() strings: those stored, and those
   * that can never be stored here because their sender is not a member of the conversation (the later
   * send is then refused as the store refuses it, not_a_member, rather than out_of_order). The check of a
   * pipelined send's predecessor (docs/decisions/0020), asked only when the committer does not remember
   * it. Read-only, one statement however many keys; it takes no lock, so a batch waiting on a
   * conversation's row does not hold it up.
   */
  settledSends(keys: readonly SendKey[]): Promise<ReadonlySet<string>>;

  /** A page of the conversation's log after a cursor, for a member (read-only; served while frozen). */
  messagesAfter(input: MessagesAfterInput): Promise<MessagesAfterResult>;

  /**
   * Finds or creates the direct conversation `conversationId` between the two users (idempotent). When the
   * conversation exists and `userId` is not one of its members, answers not_a_member. Fenced like every
   * conversation write: a new conversation takes the epoch, an existing one must not have a later one.
   * Creating it writes a `joined` outbox row for each of the two (join point 0).
   */
  openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">>;

  /**
   * Creates a group of creator ∪ memberUserIds. A retry with the same id returns the group as it is
   * (idempotent); an id taken by a conversation the creator is not in answers not_a_member. Fenced.
   * Creating it writes a `joined` outbox row per member (join point 0).
   */
  createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">>;

  /**
   * Adds users to a group `userId` belongs to; users already in it are ignored. Fenced. Each new member's
   * join point is the conversation's last seq, its `joined` outbox row is written with it, and the
   * members' version grows.
   */
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
  members(conversationId: string): Promise<MembersResult>;

  /**
   * Which of `peerUserIds` are members of at least one conversation of this store that `userId` is a
   * member of, sorted (for the edges' presence policy). Read-only; whatever a conversation's state, since
   * members are never removed and a tombstone keeps none, a member row is proof enough.
   */
  sharedPeers(userId: string, peerUserIds: readonly string[]): Promise<string[]>;

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
  mailboxPage(input: MailboxPageInput): Promise<MailboxPageResult>;

  /**
   * Retention: drops the events up to `throughSeq` (at most the head) and raises the floor to it; returns
   * the floor. A floor never goes down.
   */
  trimMailbox(userId: string, throughSeq: number): Promise<number>;

  pendingOutbox(query: OutboxQuery): Promise<OutboxPage>;

  /** Deletes outbox rows whose events were applied; ids not found are ignored. */
  deleteOutbox(ids: readonly number[]): Promise<void>;

  /**
   * Counts one more failed relay on each row, records its error and sets its next attempt retryAfterMs
   * from now; returns each row's attempts so far (rows not found are left out).
   */
  markOutboxAttempt(failures: readonly OutboxFailure[]): Promise<OutboxAttempts[]>;

  /**
   * Moves every outbox row of (conversation, recipient) to the dead letters, in one transaction, keeping
   * ids, attempts and errors; returns how many moved.
   */
  deadLetterOutbox(input: DeadLetterInput): Promise<number>;

  /** The recipients of the conversation that have dead letters, sorted (their newer rows follow them there). */
  deadLetteredRecipients(conversationId: string): Promise<string[]>;

  /** Dead letters with id > afterId, in id order, at most `limit`. */
  deadLetters(query: { readonly afterId: number; readonly limit: number }): Promise<DeadLetter[]>;

  /**
   * Moves the selected dead letters back to the outbox with their ids, attempts 0 and due now, in one
   * transaction. A selected row takes every dead letter of its (conversation, recipient) with it: moving
   * only some would let a newer row be applied before an older one. A row whose event is in the outbox
   * again meanwhile is dropped (applying is idempotent per event). Returns the ids put back, in order.
   */
  redriveDeadLetters(selection: RedriveSelection): Promise<number[]>;
}
