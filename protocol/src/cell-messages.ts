// Messages between services over NATS: edge→cell requests, cell→edge deliveries, and requests to the
// directory. All JSON, discriminated by `type`, decoded at the receiving end like client frames.
import {
  array,
  boolean,
  decode,
  failure,
  isRecord,
  integer,
  literal,
  nullable,
  object,
  oneOf,
  optional,
  parseJson,
  string,
  taggedUnion,
  text,
  type DecodeResult,
  type Decoder,
} from "./decode.ts";
import { cellId, clientMessageId, conversationId, deviceId, userId } from "./ids.ts";
import {
  addMembersBatchMax,
  conversationPageLimitMax,
  deadLettersPageLimitMax,
  groupMembersMax,
  groupTitleLengthMax,
  historyPageLimitMax,
  mailboxPageLimitMax,
  messageBodyLengthMax,
  presenceHeartbeatUsersMax,
  redriveIdsMax,
  presenceWatchUsersMax,
  deliveryBatchItemsMax,
  retryAfterMsMax,
  sendBatchItemsMax,
  typingExpiresInMsMax,
} from "./limits.ts";
import { errorCodeList, type CellErrorCode } from "./codes.ts";
import type { WorkerChannel } from "./subjects.ts";
import {
  type ConversationKind,
  conversationSummary,
  mailboxEvent,
  message,
  presenceStatus,
  sequencedEvent,
  type ConversationSummary,
  type JoinedEvent,
  type MailboxEvent,
  type Message,
  type PresenceStatus,
  type ReceiptEvent,
  type SequencedEvent,
} from "./frames.ts";

const sequence = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
/**
 * A mailbox incarnation between edges and cells: the UUID the cell's database made (a Postgres uuid column
 * takes it back on import). Clients see the same value but decode it as an opaque string (ids.ts).
 */
const mailboxIncarnation = string({
  minLength: 36,
  maxLength: 36,
  pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
});
const cellErrorCode: Decoder<CellErrorCode> = oneOf<CellErrorCode>([
  ...errorCodeList,
  "not_owner",
  "unknown_cell",
  "not_found",
  "moving",
  "entry_changed",
]);
const errorText = string({ maxLength: 2000 });
const eventId = string({ minLength: 1, maxLength: 200, pattern: /^[A-Za-z0-9_-]+$/ });

// ---------------------------------------------------------------------------------------------------
// Edge → cell worker (request/reply on the owner's subject, see subjects.ts)

/**
 * Stores a message in its conversation's home cell; the reply comes only after the commit. Edges carry
 * sends in batches (CellSendBatch); a single cell.send is served the same way.
 */
export type CellSendRequest = {
  type: "cell.send";
  senderUserId: string;
  senderDeviceId: string;
  conversationId: string;
  clientMessageId: string;
  body: string;
  /**
   * The send this session sent to the same conversation just before this one and that was still in flight
   * (docs/decisions/0020): the worker stores this send only once that one (same sender) is stored, else
   * answers `out_of_order`. Absent on a send with none in flight before it, and from older edges.
   */
  afterClientMessageId?: string;
};
/** Finds or creates the direct conversation `conversationId` (derived from the pair) with both users. */
export type CellOpenDirectRequest = { type: "cell.openDirect"; userId: string; peerUserId: string; conversationId: string };
export type CellCreateGroupRequest = {
  type: "cell.createGroup";
  creatorUserId: string;
  conversationId: string;
  title: string;
  memberUserIds: string[];
};
export type CellAddMembersRequest = { type: "cell.addMembers"; userId: string; conversationId: string; userIds: string[] };
export type CellHistoryRequest = {
  type: "cell.history";
  userId: string;
  conversationId: string;
  beforeSeq: number | null;
  limit: number;
};

/**
 * Appends an event to a user's mailbox, at the owner of the user in the user's home cell. Idempotent per
 * (userId, eventId): a repeated append returns the seq the event already has.
 */
export type CellAppendMailboxRequest = { type: "cell.appendMailbox"; userId: string; eventId: string; event: MailboxEvent };
/** Events of a user's mailbox after `afterSeq` (limit 0 asks only for the head and floor). */
export type CellMailboxPageRequest = { type: "cell.mailboxPage"; userId: string; afterSeq: number; limit: number };
/**
 * Read-only, at the conversation's owner: up to `limit` messages with seq > afterSeq, ascending, for a
 * member `userId` (a device catching up on the conversation's log). `afterSeq` null reads from the
 * member's join point. Answered by `cell.messages`, or `not_a_member`.
 */
export type CellMessagesAfterRequest = {
  type: "cell.messagesAfter";
  userId: string;
  conversationId: string;
  afterSeq: number | null;
  limit: number;
};

/**
 * Read-only: the members of a conversation, asked by an edge on behalf of `userId` (a typist), at the
 * conversation's owner. Answered by `cell.members`, or `not_a_member` when the conversation does not
 * exist or `userId` is not a member (so a non-member learns nothing). Writes nothing.
 */
export type CellMembersRequest = { type: "cell.members"; conversationId: string; userId: string };

/**
 * Read-only, answered by any worker of the cell (it reads membership rows, no key's turn): which of
 * `peerUserIds` (1 to presenceWatchUsersMax) share at least one conversation homed in this cell with
 * `userId`. An edge asks every registered cell when a session watches presence under the
 * shared_conversation policy (EDGE_PRESENCE_POLICY). Answered by `cell.sharedPeers`.
 */
export type CellSharedPeersRequest = { type: "cell.sharedPeers"; userId: string; peerUserIds: string[] };

/**
 * Raises `userId`'s read (which raises delivered too) or delivered position in the conversation to
 * `seq`, at the conversation's owner; a lower seq changes nothing. Answered by `cell.receipt`.
 */
export type CellReceiptRequest = {
  type: "cell.receipt";
  userId: string;
  conversationId: string;
  position: "read" | "delivered";
  seq: number;
};

// Migration (docs/decisions/0008-live-migration.md). A key (a user's mailbox, or a conversation) moves
// from its home cell to another in five steps, all driven by the owner of the key in the home cell:
// freeze it there (writes answer `moving`), copy it in pages to the owner of the key in the target cell
// (cell.import), flip the directory entry with a new epoch (directory.moveEntry, which publishes
// directory.changed), and leave a tombstone that answers `cell.moved`. Every step is idempotent, so a
// migration cut short by a crash is finished by asking again.

/** Moves a user's mailbox or a conversation out of this cell to `toCellId`; answered by cell.migrated. */
export type CellMigrateRequest = { type: "cell.migrate"; kind: DirectoryEntryKind; id: string; toCellId: string };

/** A mailbox event with the seq and event id it has in the mailbox being copied. */
export type ImportedMailboxEvent = { seq: number; eventId: string; event: MailboxEvent };
/** A conversation's member, with their join point (the conversation's last seq when they joined) and receipt positions (0 for none). */
export type ImportedMember = { userId: string; joinedAtMs: number; joinedAfterSeq: number; readSeq: number; deliveredSeq: number };
/** A pending outbox row of a migrating conversation: its relay is finished by the new home. */
export type ImportedOutboxEntry = { recipientUserId: string; eventId: string; event: MailboxEvent };
export type ImportedConversation = { kind: ConversationKind; title: string | null; createdByUserId: string; createdAtMs: number };

/**
 * One page of a migrating key, at the owner of the key in the target cell. The first page (`first`)
 * replaces whatever an earlier attempt or an earlier move out of this cell left (a tombstone, or a copy
 * still `importing`) and makes the key `importing`: every request for it answers `moving`. Rows of later
 * pages are inserted idempotently. The `last` page is sent only after the directory flip, carries no
 * rows, sets the head (`lastSeq`, and for a mailbox `floorSeq`) and makes the key active. A page for a
 * key already active in this cell changes nothing and answers `active`: an earlier attempt finished the
 * move (activation only ever follows the flip, so an active key is this cell's to keep).
 * Conversation pages carry `conversation` on the first page; members on any page. A mailbox's `last`
 * page carries its `incarnation` (docs/decisions/0021), which the copy takes, so devices do not see the
 * moved mailbox as another one; a page without it (from a worker before 0021) leaves the copy's own.
 */
export type CellImportRequest =
  | {
      type: "cell.import";
      kind: "user";
      id: string;
      fromCellId: string;
      first: boolean;
      last: boolean;
      lastSeq: number;
      floorSeq: number;
      events: ImportedMailboxEvent[];
      incarnation?: string;
    }
  | {
      type: "cell.import";
      kind: "conversation";
      id: string;
      fromCellId: string;
      first: boolean;
      last: boolean;
      lastSeq: number;
      conversation: ImportedConversation | null;
      members: ImportedMember[];
      messages: Message[];
      outbox: ImportedOutboxEntry[];
    };

/** Counts of what the cell still homes (any worker answers): a drained cell answers zeros. */
export type CellStatsRequest = { type: "cell.stats" };

/**
 * The cell's dead letters (docs/decisions/0022), any worker answers: those with an id above `afterId`,
 * in id order, at most `limit`. An operator's read (`cellwire dead-letters list`).
 */
export type CellDeadLettersRequest = { type: "cell.deadLetters"; afterId: number; limit: number };

/**
 * Moves dead letters back to the cell's outbox (any worker answers): each named id with every other dead
 * letter of its (conversation, recipient), so their order holds. The owners' sweepers relay them.
 */
export type CellRedriveDeadLettersRequest = { type: "cell.redriveDeadLetters"; ids: number[] };

export type CellRequest =
  | CellMigrateRequest
  | CellImportRequest
  | CellStatsRequest
  | CellDeadLettersRequest
  | CellRedriveDeadLettersRequest
  | CellReceiptRequest
  | CellSendRequest
  | CellOpenDirectRequest
  | CellCreateGroupRequest
  | CellAddMembersRequest
  | CellHistoryRequest
  | CellAppendMailboxRequest
  | CellMailboxPageRequest
  | CellMessagesAfterRequest
  | CellMembersRequest
  | CellSharedPeersRequest;

/**
 * Many cell.send requests for keys one worker owns, in one NATS request (docs/decisions/0009): answered
 * by one `cell.sendBatchReplies` with a reply per send, in order. `budgetMs` is how long the edge still
 * waits for the replies when it sends the batch: a worker does not start a send whose budget ran out
 * before its turn (its caller has given up) and answers it `deadline_exceeded` instead.
 */
export type CellSendBatch = { type: "cell.sendBatch"; budgetMs: number; sends: CellSendRequest[] };

/**
 * Many cell.mailboxPage requests for users one worker owns, in one NATS request: answered by one
 * `cell.mailboxPageBatchReplies` with a reply per page, in order, each as the single request would have
 * been answered (docs/decisions/0042). An edge batches the pages of one turn's connects, as it does sends.
 */
export type CellMailboxPageBatch = { type: "cell.mailboxPageBatch"; budgetMs: number; pages: CellMailboxPageRequest[] };
/** The request batches a worker answers with one reply per item. */
export type CellRequestBatch = CellSendBatch | CellMailboxPageBatch;

const entryKind: Decoder<DirectoryEntryKind> = oneOf<DirectoryEntryKind>(["user", "conversation"]);
/** A user id or a conversation id: the two allowlists together (both exclude '.', '*', '>' and spaces). */
const entryId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ });
const position = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const timestampMs = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
/** Items of one import page; sized so that a page of bodies at their limit stays under a 1 MiB NATS message. */
export const importPageItemsMax = 200;
const importedMailboxEvent: Decoder<ImportedMailboxEvent> = object({ seq: sequence, eventId, event: mailboxEvent });
const importedMember: Decoder<ImportedMember> = object({
  userId,
  joinedAtMs: timestampMs,
  joinedAfterSeq: position,
  readSeq: position,
  deliveredSeq: position,
});
const importedOutboxEntry: Decoder<ImportedOutboxEntry> = object({ recipientUserId: userId, eventId, event: mailboxEvent });
const importedConversation: Decoder<ImportedConversation> = object({
  kind: oneOf<ConversationKind>(["direct", "group"]),
  title: nullable(text({ minLength: 1, maxLength: groupTitleLengthMax })),
  createdByUserId: userId,
  createdAtMs: timestampMs,
});
const importRequest: Decoder<CellImportRequest> = (input, path) => {
  if (!isRecord(input)) return failure(path, "must be an object");
  const kind = entryKind(input["kind"], `${path}.kind`);
  if (!kind.ok) return kind;
  if (kind.value === "user") {
    return object({
      type: literal("cell.import"),
      kind: literal("user"),
      id: userId,
      fromCellId: cellId,
      first: boolean,
      last: boolean,
      lastSeq: position,
      floorSeq: position,
      events: array(importedMailboxEvent, { maxItems: importPageItemsMax }),
      incarnation: optional(mailboxIncarnation),
    })(input, path);
  }
  return object({
    type: literal("cell.import"),
    kind: literal("conversation"),
    id: conversationId,
    fromCellId: cellId,
    first: boolean,
    last: boolean,
    lastSeq: position,
    conversation: nullable(importedConversation),
    members: array(importedMember, { maxItems: groupMembersMax }),
    messages: array(message, { maxItems: importPageItemsMax }),
    outbox: array(importedOutboxEntry, { maxItems: importPageItemsMax }),
  })(input, path);
};

const cellSendRequest: Decoder<CellSendRequest> = object({
  type: literal("cell.send"),
  senderUserId: userId,
  senderDeviceId: deviceId,
  conversationId,
  clientMessageId,
  body: text({ minLength: 1, maxLength: messageBodyLengthMax }),
  afterClientMessageId: optional(clientMessageId),
});

export const cellSendBatch: Decoder<CellSendBatch> = object({
  type: literal("cell.sendBatch"),
  budgetMs: integer({ min: 0, max: 600_000 }),
  sends: array(cellSendRequest, { minItems: 1, maxItems: sendBatchItemsMax }),
});

const cellMailboxPageRequest: Decoder<CellMailboxPageRequest> = object({
  type: literal("cell.mailboxPage"),
  userId,
  afterSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  limit: integer({ min: 0, max: mailboxPageLimitMax }),
});

export const cellMailboxPageBatch: Decoder<CellMailboxPageBatch> = object({
  type: literal("cell.mailboxPageBatch"),
  budgetMs: integer({ min: 0, max: 600_000 }),
  pages: array(cellMailboxPageRequest, { minItems: 1, maxItems: sendBatchItemsMax }),
});

export const cellRequest: Decoder<CellRequest> = taggedUnion<CellRequest>({
  "cell.migrate": object({ type: literal("cell.migrate"), kind: entryKind, id: entryId, toCellId: cellId }),
  "cell.import": importRequest,
  "cell.stats": object({ type: literal("cell.stats") }),
  "cell.deadLetters": object({
    type: literal("cell.deadLetters"),
    afterId: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    limit: integer({ min: 1, max: deadLettersPageLimitMax }),
  }),
  "cell.redriveDeadLetters": object({
    type: literal("cell.redriveDeadLetters"),
    ids: array(integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), { minItems: 1, maxItems: redriveIdsMax, unique: true }),
  }),
  "cell.send": cellSendRequest,
  "cell.openDirect": object({ type: literal("cell.openDirect"), userId, peerUserId: userId, conversationId }),
  "cell.createGroup": object({
    type: literal("cell.createGroup"),
    creatorUserId: userId,
    conversationId,
    title: text({ minLength: 1, maxLength: groupTitleLengthMax }),
    memberUserIds: array(userId, { maxItems: groupMembersMax, unique: true }),
  }),
  "cell.addMembers": object({
    type: literal("cell.addMembers"),
    userId,
    conversationId,
    userIds: array(userId, { minItems: 1, maxItems: addMembersBatchMax, unique: true }),
  }),
  "cell.history": object({
    type: literal("cell.history"),
    userId,
    conversationId,
    beforeSeq: nullable(sequence),
    limit: integer({ min: 1, max: historyPageLimitMax }),
  }),
  "cell.appendMailbox": object({ type: literal("cell.appendMailbox"), userId, eventId, event: mailboxEvent }),
  "cell.mailboxPage": cellMailboxPageRequest,
  "cell.messagesAfter": object({
    type: literal("cell.messagesAfter"),
    userId,
    conversationId,
    afterSeq: nullable(integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    limit: integer({ min: 1, max: conversationPageLimitMax }),
  }),
  "cell.members": object({ type: literal("cell.members"), conversationId, userId }),
  "cell.sharedPeers": object({
    type: literal("cell.sharedPeers"),
    userId,
    peerUserIds: array(userId, { minItems: 1, maxItems: presenceWatchUsersMax }),
  }),
  "cell.receipt": object({
    type: literal("cell.receipt"),
    userId,
    conversationId,
    position: oneOf(["read", "delivered"]),
    seq: sequence,
  }),
});

/** The longest budget a cell request may carry (10 minutes: far above any caller's deadline). */
export const cellRequestBudgetMsMax = 600_000;

/**
 * A cell request as a worker receives it: the request, and `budgetMs`, how long its caller still waits
 * for the reply when it sent it (docs/decisions/0020). Relative, because the clocks of two processes
 * differ: the worker turns it into a deadline of its own on receipt, and does not start the request
 * once that passed. Absent from older senders (docs/decisions/0010): such a request has no deadline.
 * On the wire it is one more field of the request object, `budgetMs`, so the request's type is unchanged.
 */
export type CellRequestEnvelope = { readonly request: CellRequest; readonly budgetMs: number | undefined };

const budgetMs = integer({ min: 0, max: cellRequestBudgetMsMax });

export const cellRequestEnvelope: Decoder<CellRequestEnvelope> = (input, path) => {
  if (!isRecord(input) || !("budgetMs" in input)) {
    const decoded = cellRequest(input, path);
    return decoded.ok ? { ok: true, value: { request: decoded.value, budgetMs: undefined } } : decoded;
  }
  const { budgetMs: budgetInput, ...rest } = input;
  const budget = budgetMs(budgetInput, `${path}.budgetMs`);
  if (!budget.ok) return budget;
  const decoded = cellRequest(rest, path);
  return decoded.ok ? { ok: true, value: { request: decoded.value, budgetMs: budget.value } } : decoded;
};

/** `request` with its caller's remaining budget, as CellRouter puts it on the wire. */
export function withBudget(request: CellRequest, budgetMsValue: number): CellRequest & { budgetMs: number } {
  return { ...request, budgetMs: Math.max(0, Math.min(cellRequestBudgetMsMax, Math.floor(budgetMsValue))) };
}

/**
 * The one channel of a worker on which each request kind is served (docs/decisions/0015): the router
 * sends it there, the worker refuses it anywhere else, and the NATS permissions say who may publish on
 * each channel. A new kind must be placed here, so it cannot slip through an older grant.
 */
export function cellRequestChannel(type: CellRequest["type"] | CellRequestBatch["type"]): WorkerChannel {
  return requestChannels[type];
}

/** The channel of a request type read off the wire (undefined for a type no request has). */
export function cellRequestChannelOf(type: unknown): WorkerChannel | undefined {
  return typeof type === "string" ? requestChannelsByType.get(type) : undefined;
}

const requestChannels: Readonly<Record<CellRequest["type"] | CellRequestBatch["type"], WorkerChannel>> = {
  "cell.send": "edge",
  "cell.sendBatch": "edge",
  "cell.mailboxPageBatch": "edge",
  "cell.openDirect": "edge",
  "cell.createGroup": "edge",
  "cell.addMembers": "edge",
  "cell.history": "edge",
  "cell.mailboxPage": "edge",
  "cell.messagesAfter": "edge",
  "cell.members": "edge",
  "cell.receipt": "edge",
  // An edge asks it before showing a user's presence (presence-access.ts).
  "cell.sharedPeers": "edge",
  "cell.appendMailbox": "peer",
  "cell.import": "peer",
  "cell.migrate": "admin",
  "cell.stats": "admin",
  "cell.deadLetters": "admin",
  "cell.redriveDeadLetters": "admin",
};
const requestChannelsByType: ReadonlyMap<string, WorkerChannel> = new Map(Object.entries(requestChannels));

/** The mailbox event id of a joined event: a user joins a conversation once. */
export function joinedEventId(event: Pick<JoinedEvent, "conversationId">): string {
  return `joined-${event.conversationId}`;
}

/** The mailbox event id of a receipt: one per position reached, so a relayed copy is applied once. */
export function receiptEventId(event: ReceiptEvent): string {
  return `receipt-${event.conversationId}-${event.userId}-${event.readSeq}-${event.deliveredSeq}`;
}

/** The only event id a mailbox event may be appended under. */
export function mailboxEventId(event: MailboxEvent): string {
  return event.kind === "joined" ? joinedEventId(event) : receiptEventId(event);
}

/** Answers `cell.receipt`: the positions after the request; `advanced` says whether it moved them. */
export type CellReceiptReply = {
  type: "cell.receipt";
  conversationId: string;
  userId: string;
  readSeq: number;
  deliveredSeq: number;
  advanced: boolean;
};

export type CellStoredReply = { type: "cell.stored"; message: Message; deduplicated: boolean };
export type CellConversationReply = { type: "cell.conversation"; conversation: ConversationSummary };
export type CellHistoryReply = { type: "cell.historyPage"; conversationId: string; messages: Message[]; hasMore: boolean };
/** `retryAfterMs`: set with `overloaded`, how long the requester should wait before asking again. */
export type CellErrorReply = { type: "cell.error"; code: CellErrorCode; message: string; retryAfterMs?: number };
export type CellAppendedReply = { type: "cell.appended"; userId: string; seq: number; deduplicated: boolean };
/**
 * `floorSeq`: every event up to it was cut by retention (0 when none was); a page asked after a seq
 * below the floor cannot be served and the device must resync. `headSeq`: the newest event's seq.
 * `incarnation`: which mailbox of the user this is (docs/decisions/0021); absent while the user has no
 * mailbox row (and from workers before 0021).
 */
export type CellMailboxEventsReply = {
  type: "cell.mailboxEvents";
  userId: string;
  events: SequencedEvent[];
  headSeq: number;
  floorSeq: number;
  incarnation?: string;
};
/** Answers `cell.members`: every member, sorted, the asker included. */
export type CellMembersReply = { type: "cell.members"; conversationId: string; memberUserIds: string[] };
/** Answers `cell.sharedPeers`: the peers asked about that share a conversation homed here with `userId`, sorted. */
export type CellSharedPeersReply = { type: "cell.sharedPeers"; userId: string; peerUserIds: string[] };
/**
 * Answers `cell.messagesAfter`: `afterSeq` is where the page starts (the member's join point when the
 * request asked for it), `messages` the consecutive seqs after it (at most the limit and the page byte
 * budget), `headSeq` the conversation's last seq when read.
 */
export type CellMessagesReply = { type: "cell.messages"; conversationId: string; afterSeq: number; messages: Message[]; headSeq: number };
/** Answers `cell.sendBatch`: one reply per send, in the batch's order. */
export type CellSendBatchReplies = { type: "cell.sendBatchReplies"; replies: CellReply[] };
/** Answers `cell.mailboxPageBatch`: one reply per page, in the batch's order. */
export type CellMailboxPageBatchReplies = { type: "cell.mailboxPageBatchReplies"; replies: CellReply[] };
/** The answer to a request batch. */
export type CellBatchReplies = CellSendBatchReplies | CellMailboxPageBatchReplies;

/** Answers cell.migrate: the key now lives in `toCellId` under directory epoch `epoch`. */
export type CellMigratedReply = {
  type: "cell.migrated";
  kind: DirectoryEntryKind;
  id: string;
  fromCellId: string;
  toCellId: string;
  epoch: number;
  /** From the freeze's commit to the directory flip: how long writes to the key answered `moving`. */
  pauseMs: number;
  /** Mailbox events, or messages, copied. */
  copiedItems: number;
  /** True when an earlier attempt had finished the move (nothing was done now). */
  alreadyMoved: boolean;
};
export type CellImportedReply = { type: "cell.imported"; kind: DirectoryEntryKind; id: string; state: "importing" | "active" };
/**
 * Answers any request for a key that moved out of this cell: `cellId` and `epoch` are its new home as the
 * tombstone recorded it. The requester drops its cached entry (if older) and asks the new home.
 */
export type CellMovedReply = { type: "cell.moved"; kind: DirectoryEntryKind; id: string; cellId: string; epoch: number };
export type CellStatsReply = {
  type: "cell.stats";
  cellId: string;
  users: number;
  conversations: number;
  outboxRows: number;
  frozen: number;
};

/** An outbox row that went to the dead letters: its outbox id, why (`lastError`) and when. */
export type DeadLetterSummary = {
  id: number;
  conversationId: string;
  recipientUserId: string;
  eventId: string;
  attempts: number;
  lastError: string;
  createdAtMs: number;
  deadLetteredAtMs: number;
};
/** Answers cell.deadLetters: a page in id order; fewer than the limit means it is the last. */
export type CellDeadLettersReply = { type: "cell.deadLetters"; cellId: string; deadLetters: DeadLetterSummary[] };
/**
 * Answers cell.redriveDeadLetters: how many rows went back to the outbox (those named and the rest of
 * their groups; a named id that is no dead letter, or whose event is pending again, adds none).
 */
export type CellRedrivenReply = { type: "cell.redriven"; cellId: string; rows: number };

export type CellReply =
  | CellMigratedReply
  | CellImportedReply
  | CellMovedReply
  | CellStatsReply
  | CellDeadLettersReply
  | CellRedrivenReply
  | CellReceiptReply
  | CellStoredReply
  | CellConversationReply
  | CellHistoryReply
  | CellAppendedReply
  | CellMailboxEventsReply
  | CellMembersReply
  | CellSharedPeersReply
  | CellMessagesReply
  | CellErrorReply;

const count = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const epochValue = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });

export const cellReply: Decoder<CellReply> = taggedUnion<CellReply>({
  "cell.migrated": object({
    type: literal("cell.migrated"),
    kind: entryKind,
    id: entryId,
    fromCellId: cellId,
    toCellId: cellId,
    epoch: epochValue,
    pauseMs: count,
    copiedItems: count,
    alreadyMoved: boolean,
  }),
  "cell.imported": object({ type: literal("cell.imported"), kind: entryKind, id: entryId, state: oneOf(["importing", "active"]) }),
  "cell.moved": object({ type: literal("cell.moved"), kind: entryKind, id: entryId, cellId, epoch: epochValue }),
  "cell.stats": object({ type: literal("cell.stats"), cellId, users: count, conversations: count, outboxRows: count, frozen: count }),
  "cell.deadLetters": object({
    type: literal("cell.deadLetters"),
    cellId,
    deadLetters: array(
      object({
        id: sequence,
        conversationId,
        recipientUserId: userId,
        eventId,
        attempts: count,
        lastError: errorText,
        createdAtMs: count,
        deadLetteredAtMs: count,
      }),
      { maxItems: deadLettersPageLimitMax },
    ),
  }),
  "cell.redriven": object({ type: literal("cell.redriven"), cellId, rows: count }),
  "cell.stored": object({
    type: literal("cell.stored"),
    message,
    deduplicated: boolean,
  }),
  "cell.conversation": object({ type: literal("cell.conversation"), conversation: conversationSummary }),
  "cell.historyPage": object({
    type: literal("cell.historyPage"),
    conversationId,
    messages: array(message, { maxItems: historyPageLimitMax }),
    hasMore: boolean,
  }),
  "cell.appended": object({ type: literal("cell.appended"), userId, seq: sequence, deduplicated: boolean }),
  "cell.mailboxEvents": object({
    type: literal("cell.mailboxEvents"),
    userId,
    events: array(sequencedEvent, { maxItems: mailboxPageLimitMax }),
    headSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    floorSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    incarnation: optional(mailboxIncarnation),
  }),
  "cell.members": object({
    type: literal("cell.members"),
    conversationId,
    memberUserIds: array(userId, { minItems: 1, maxItems: groupMembersMax }),
  }),
  "cell.sharedPeers": object({
    type: literal("cell.sharedPeers"),
    userId,
    peerUserIds: array(userId, { maxItems: presenceWatchUsersMax }),
  }),
  "cell.messages": object({
    type: literal("cell.messages"),
    conversationId,
    afterSeq: count,
    messages: array(message, { maxItems: conversationPageLimitMax }),
    headSeq: count,
  }),
  "cell.error": object({
    type: literal("cell.error"),
    code: cellErrorCode,
    message: errorText,
    retryAfterMs: optional(integer({ min: 0, max: retryAfterMsMax })),
  }),
  "cell.receipt": object({
    type: literal("cell.receipt"),
    conversationId,
    userId,
    readSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    deliveredSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    advanced: boolean,
  }),
});

export const cellSendBatchReplies: Decoder<CellSendBatchReplies> = object({
  type: literal("cell.sendBatchReplies"),
  replies: array(cellReply, { minItems: 1, maxItems: sendBatchItemsMax }),
});

export const cellMailboxPageBatchReplies: Decoder<CellMailboxPageBatchReplies> = object({
  type: literal("cell.mailboxPageBatchReplies"),
  replies: array(cellReply, { minItems: 1, maxItems: sendBatchItemsMax }),
});

// ---------------------------------------------------------------------------------------------------
// Workers and edges → every edge: deliveries in batches on one subject (deliveriesSubject) that every edge
// reads (docs/decisions/0011). Each edge hands each item to its own sessions of the recipients.

/** A mailbox event for its user, as the owner of the user's mailbox hands it over after the append. */
export type Delivery = { type: "delivery.event"; recipientUserId: string; seq: number; event: MailboxEvent };

/** A message, once, with every member it goes to (the sender included), after its commit. */
export type BatchedMessage = { recipientUserIds: string[]; message: Message };
/** A mailbox event of one user, with its mailbox seq. */
export type BatchedEvent = { recipientUserId: string; seq: number; event: MailboxEvent };
/**
 * A typing indicator for the members of a conversation (the typist included, for their other devices).
 * Ephemeral: no seq, never stored; an edge forwards it to every session of each recipient except those
 * of the typing device.
 */
export type BatchedTyping = { recipientUserIds: string[]; conversationId: string; userId: string; deviceId: string; expiresInMs: number };

/**
 * What a worker publishes per commit batch (messages, in seq order per conversation), what a mailbox owner
 * publishes per append (an event), and what a typist's edge publishes (typing). At most
 * deliveryBatchItemsMax items and sendBatchBytesMax bytes.
 */
export type DeliveryBatch = { type: "delivery.batch"; messages: BatchedMessage[]; events: BatchedEvent[]; typing: BatchedTyping[] };

const recipients = array(userId, { minItems: 1, maxItems: groupMembersMax });
export const deliveryBatch: Decoder<DeliveryBatch> = object({
  type: literal("delivery.batch"),
  messages: array(object({ recipientUserIds: recipients, message }), { maxItems: deliveryBatchItemsMax }),
  events: array(object({ recipientUserId: userId, seq: sequence, event: mailboxEvent }), { maxItems: deliveryBatchItemsMax }),
  typing: array(
    object({ recipientUserIds: recipients, conversationId, userId, deviceId, expiresInMs: integer({ min: 1, max: typingExpiresInMsMax }) }),
    { maxItems: deliveryBatchItemsMax },
  ),
});

// ---------------------------------------------------------------------------------------------------
// Edge → edges: presence claims, published on the presence subject (see subjects.ts) that every edge
// subscribes to. An edge claims its online users (those with at least one open session there); a claim
// stands for `claimTtlMs` after the last message that made it, by the receiver's clock, so the claims
// of an edge that died without a goodbye lapse by themselves (NATS 2.9 KV has no per-key TTL either).

/** Names one run of one edge process: a restarted edge does not inherit its predecessor's claims. */
export const edgeInstanceId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ });
const claimTtlMs = integer({ min: 100, max: 3_600_000 });

/**
 * Re-claims some of the edge's online users; an edge sends its whole online set every heartbeat
 * interval, in messages of at most presenceHeartbeatUsersMax users.
 */
export type PresenceHeartbeat = { type: "presence.heartbeat"; edgeInstanceId: string; claimTtlMs: number; userIds: string[] };
/** A user's first session opened on the edge (online) or its last one closed (offline). */
export type PresenceClaimChange = {
  type: "presence.change";
  edgeInstanceId: string;
  claimTtlMs: number;
  userId: string;
  status: PresenceStatus;
};
/** The edge is stopping: every claim it made ends now. */
export type PresenceGoodbye = { type: "presence.goodbye"; edgeInstanceId: string };
export type PresenceMessage = PresenceHeartbeat | PresenceClaimChange | PresenceGoodbye;

export const presenceMessage: Decoder<PresenceMessage> = taggedUnion<PresenceMessage>({
  "presence.heartbeat": object({
    type: literal("presence.heartbeat"),
    edgeInstanceId,
    claimTtlMs,
    userIds: array(userId, { minItems: 1, maxItems: presenceHeartbeatUsersMax, unique: true }),
  }),
  "presence.change": object({ type: literal("presence.change"), edgeInstanceId, claimTtlMs, userId, status: presenceStatus }),
  "presence.goodbye": object({ type: literal("presence.goodbye"), edgeInstanceId }),
});

// ---------------------------------------------------------------------------------------------------
// Anyone → directory service (request/reply on the directory subject, queue group "directory")

export type DirectoryEntryKind = "user" | "conversation";

/** Resolves a user's home cell, placing a new user on a registered cell (atomically, once). */
export type DirectoryResolveUser = { type: "directory.resolveUser"; userId: string };
/**
 * Resolves each user as directory.resolveUser does, in one request: an edge's users seen for the first
 * time within one turn (a reconnect wave after an edge's loss). Answered by directory.entries, one reply
 * per user in order. A directory older than this request answers it with an error: upgrade the directory
 * before the edges (docs/operations.md).
 */
export type DirectoryResolveUsers = { type: "directory.resolveUsers"; userIds: string[] };
/** Users in one directory.resolveUsers. */
export const directoryResolveUsersMax = 100;
/** Places a user on the given cell unless already placed (tests and operators); returns the entry. */
export type DirectoryAssignUser = { type: "directory.assignUser"; userId: string; cellId: string };
/** The user's entry without placing a user seen for the first time (operators: `cellwire whereis`). */
export type DirectoryLookupUser = { type: "directory.lookupUser"; userId: string };
export type DirectoryLookupConversation = { type: "directory.lookupConversation"; conversationId: string };
/** Places a new conversation on preferredCellId unless already placed; returns the entry either way. */
export type DirectoryPlaceConversation = { type: "directory.placeConversation"; conversationId: string; preferredCellId: string };
/** Registers (or refreshes) a cell with a capacity weight. */
export type DirectoryRegisterCell = { type: "directory.registerCell"; cellId: string; weight: number };
export type DirectoryListCells = { type: "directory.listCells" };

/**
 * Moves an entry from `fromCellId` at `expectedEpoch` to `toCellId` with epoch + 1, and publishes
 * directory.changed. Idempotent: an entry already on `toCellId` at expectedEpoch + 1 is answered as is.
 * Anything else answers entry_changed (or not_found, unknown_cell). Only a migrating cell asks this.
 */
export type DirectoryMoveEntry = {
  type: "directory.moveEntry";
  kind: DirectoryEntryKind;
  id: string;
  fromCellId: string;
  toCellId: string;
  expectedEpoch: number;
};
/** Sets a registered cell's state: draining cells get no new users or conversations. Answers directory.cells. */
export type DirectorySetCellState = { type: "directory.setCellState"; cellId: string; state: CellState };
/**
 * A page of the ids of one kind whose entries are on `cellId` (Redis SSCAN: `cursor` "0" starts, a reply
 * cursor "0" ends; an id may come twice, and one moved meanwhile may come or not). For drains.
 */
export type DirectoryCellEntries = {
  type: "directory.cellEntries";
  cellId: string;
  kind: DirectoryEntryKind;
  cursor: string;
  count: number;
};

export type DirectoryRequest =
  | DirectoryMoveEntry
  | DirectorySetCellState
  | DirectoryCellEntries
  | DirectoryResolveUser
  | DirectoryResolveUsers
  | DirectoryAssignUser
  | DirectoryLookupUser
  | DirectoryLookupConversation
  | DirectoryPlaceConversation
  | DirectoryRegisterCell
  | DirectoryListCells;

const weight = integer({ min: 1, max: 1_000_000 });

const scanCursor = string({ minLength: 1, maxLength: 20, pattern: /^[0-9]+$/ });
/** Ids in one directory.cellEntries page. */
export const cellEntriesPageMax = 1000;

export const directoryRequest: Decoder<DirectoryRequest> = taggedUnion<DirectoryRequest>({
  "directory.moveEntry": object({
    type: literal("directory.moveEntry"),
    kind: oneOf<DirectoryEntryKind>(["user", "conversation"]),
    id: string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ }),
    fromCellId: cellId,
    toCellId: cellId,
    expectedEpoch: integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  }),
  "directory.setCellState": object({ type: literal("directory.setCellState"), cellId, state: oneOf<CellState>(["active", "draining"]) }),
  "directory.cellEntries": object({
    type: literal("directory.cellEntries"),
    cellId,
    kind: oneOf<DirectoryEntryKind>(["user", "conversation"]),
    cursor: scanCursor,
    count: integer({ min: 1, max: cellEntriesPageMax }),
  }),
  "directory.resolveUser": object({ type: literal("directory.resolveUser"), userId }),
  "directory.resolveUsers": object({
    type: literal("directory.resolveUsers"),
    userIds: array(userId, { minItems: 1, maxItems: directoryResolveUsersMax }),
  }),
  "directory.assignUser": object({ type: literal("directory.assignUser"), userId, cellId }),
  "directory.lookupUser": object({ type: literal("directory.lookupUser"), userId }),
  "directory.lookupConversation": object({ type: literal("directory.lookupConversation"), conversationId }),
  "directory.placeConversation": object({ type: literal("directory.placeConversation"), conversationId, preferredCellId: cellId }),
  "directory.registerCell": object({ type: literal("directory.registerCell"), cellId, weight }),
  "directory.listCells": object({ type: literal("directory.listCells") }),
});

export type CellState = "active" | "draining";
export type CellRecord = { cellId: string; weight: number; state: CellState };
/** `epoch` grows each time the entry changes cell, so a cached copy can be recognised as stale. */
export type DirectoryEntry = { kind: DirectoryEntryKind; id: string; cellId: string; epoch: number };

export type DirectoryEntryReply = { type: "directory.entry"; entry: DirectoryEntry; placed: boolean };
export type DirectoryCellsReply = { type: "directory.cells"; cells: CellRecord[] };
export type DirectoryErrorReply = { type: "directory.error"; code: CellErrorCode; message: string };
export type DirectoryCellEntriesReply = {
  type: "directory.cellEntries";
  cellId: string;
  kind: DirectoryEntryKind;
  ids: string[];
  cursor: string;
};
/** The answer to directory.resolveUsers: each user's own reply, in the order of the request. */
export type DirectoryEntriesReply = { type: "directory.entries"; replies: (DirectoryEntryReply | DirectoryErrorReply)[] };
export type DirectoryReply =
  DirectoryEntryReply | DirectoryCellsReply | DirectoryCellEntriesReply | DirectoryEntriesReply | DirectoryErrorReply;

const directoryEntry: Decoder<DirectoryEntry> = object({
  kind: oneOf(["user", "conversation"]),
  id: string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ }),
  cellId,
  epoch: integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
});
const cellRecord: Decoder<CellRecord> = object({ cellId, weight, state: oneOf(["active", "draining"]) });

const directoryEntryReply: Decoder<DirectoryEntryReply> = object({
  type: literal("directory.entry"),
  entry: directoryEntry,
  placed: boolean,
});
const directoryErrorReply: Decoder<DirectoryErrorReply> = object({
  type: literal("directory.error"),
  code: cellErrorCode,
  message: errorText,
});

export const directoryReply: Decoder<DirectoryReply> = taggedUnion<DirectoryReply>({
  "directory.entry": directoryEntryReply,
  "directory.cells": object({ type: literal("directory.cells"), cells: array(cellRecord, { maxItems: 1000 }) }),
  "directory.cellEntries": object({
    type: literal("directory.cellEntries"),
    cellId,
    kind: oneOf<DirectoryEntryKind>(["user", "conversation"]),
    ids: array(string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ }), { maxItems: 10 * cellEntriesPageMax }),
    cursor: scanCursor,
  }),
  "directory.entries": object({
    type: literal("directory.entries"),
    replies: array(
      taggedUnion<DirectoryEntryReply | DirectoryErrorReply>({
        "directory.entry": directoryEntryReply,
        "directory.error": directoryErrorReply,
      }),
      { minItems: 1, maxItems: directoryResolveUsersMax },
    ),
  }),
  "directory.error": directoryErrorReply,
});

/** Published on the directory's change subject whenever an entry moves (used by edge caches). */
export type DirectoryChange = { type: "directory.changed"; entry: DirectoryEntry };
export const directoryChange: Decoder<DirectoryChange> = object({ type: literal("directory.changed"), entry: directoryEntry });

// ---------------------------------------------------------------------------------------------------
// Directory → any worker of one cell (request/reply on cellInventorySubject, queue group "inventory"):
// what the cell holds, so a directory whose store lost its data rebuilds it (docs/decisions/0023).

/** The migration state of a key in the cell that answers (the cells' schema: key states). */
export type InventoryKeyState = "active" | "frozen" | "importing" | "moved";
export const inventoryKeyStates: readonly InventoryKeyState[] = ["active", "frozen", "importing", "moved"];
/**
 * One key the cell has a row for: a mailbox (`user`) or a conversation. A `moved` row is a tombstone naming
 * the key's new home and its directory epoch there; a `frozen` one is being copied toward movingToCellId.
 */
export type InventoryKey = { id: string; state: InventoryKeyState; movingToCellId: string | null; movedEpoch: number | null };
/** Keys in one cell.inventory page. */
export const inventoryPageMax = 1000;
/** Up to `limit` keys of `kind` whose ids come after `afterId` (bytewise; "" from the start). */
export type CellInventoryRequest = { type: "cell.inventory"; kind: DirectoryEntryKind; afterId: string; limit: number };
/** `done`: no key comes after the last of this page. `weight`: the cell's configured capacity weight. */
export type CellInventoryReply = {
  type: "cell.inventoryPage";
  cellId: string;
  weight: number;
  kind: DirectoryEntryKind;
  keys: InventoryKey[];
  done: boolean;
};
export type CellInventoryAnswer = CellInventoryReply | CellErrorReply;

const entryIdText = string({ minLength: 0, maxLength: 64, pattern: /^[A-Za-z0-9_-]{0,64}$/ });
export const cellInventoryRequest: Decoder<CellInventoryRequest> = object({
  type: literal("cell.inventory"),
  kind: oneOf<DirectoryEntryKind>(["user", "conversation"]),
  afterId: entryIdText,
  limit: integer({ min: 1, max: inventoryPageMax }),
});
const inventoryKey: Decoder<InventoryKey> = object({
  id: string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ }),
  state: oneOf<InventoryKeyState>(inventoryKeyStates),
  movingToCellId: nullable(cellId),
  movedEpoch: nullable(integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
});
export const cellInventoryAnswer: Decoder<CellInventoryAnswer> = taggedUnion<CellInventoryAnswer>({
  "cell.inventoryPage": object({
    type: literal("cell.inventoryPage"),
    cellId,
    weight,
    kind: oneOf<DirectoryEntryKind>(["user", "conversation"]),
    keys: array(inventoryKey, { maxItems: inventoryPageMax }),
    done: boolean,
  }),
  "cell.error": object({
    type: literal("cell.error"),
    code: cellErrorCode,
    message: errorText,
    retryAfterMs: optional(integer({ min: 0, max: retryAfterMsMax })),
  }),
});

// ---------------------------------------------------------------------------------------------------
// Worker leases in a cell's membership bucket (NATS JetStream KV), key `worker.<workerId>`.

export type WorkerLease = { workerId: string; cellId: string; subject: string; startedAtMs: number; leaseMs: number };
export const workerLease: Decoder<WorkerLease> = object({
  workerId: string({ minLength: 1, maxLength: 48, pattern: /^[a-z0-9][a-z0-9-]*$/ }),
  cellId,
  subject: string({ minLength: 1, maxLength: 200, pattern: /^[A-Za-z0-9_.-]+$/ }),
  startedAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  leaseMs: integer({ min: 1, max: 3_600_000 }),
});

// ---------------------------------------------------------------------------------------------------

/** Decodes a NATS payload (UTF-8 JSON) with the given decoder. */
export function decodeJsonText<T>(decoder: Decoder<T>, text: string): DecodeResult<T> {
  const parsed = parseJson(text);
  if (!parsed.ok) return parsed;
  return decode(decoder, parsed.value);
}

// ---------------------------------------------------------------------------------------------------
// Operator → local topology launcher (request/reply on the topology subject, see subjects.ts). In
// production an orchestrator starts a new cell's workers; on one machine the launcher does.

/** Workers one addCell may start. */
export const addCellWorkersMax = 8;
/** Starts `workers` workers of cell `cellId` (they create and migrate its database and register it). */
export type TopologyAddCell = { type: "topology.addCell"; cellId: string; workers: number; weight: number };
export const topologyRequest: Decoder<TopologyAddCell> = object({
  type: literal("topology.addCell"),
  cellId,
  workers: integer({ min: 1, max: addCellWorkersMax }),
  weight,
});
export type TopologyCellStarted = { type: "topology.cellStarted"; cellId: string; workerIds: string[] };
export type TopologyError = { type: "topology.error"; message: string };
export type TopologyReply = TopologyCellStarted | TopologyError;
export const topologyReply: Decoder<TopologyReply> = taggedUnion<TopologyReply>({
  "topology.cellStarted": object({
    type: literal("topology.cellStarted"),
    cellId,
    workerIds: array(string({ minLength: 1, maxLength: 48, pattern: /^[a-z0-9][a-z0-9-]*$/ }), { maxItems: addCellWorkersMax }),
  }),
  "topology.error": object({ type: literal("topology.error"), message: errorText }),
});

// ---------------------------------------------------------------------------------------------------
// Operator → every edge (publish on the revocations subject, see subjects.ts).

/**
 * Revokes every session of `userId`: each edge closes them with 4103 (token_revoked) and, for a bounded
 * time, refuses that user's tokens issued before `revokedAtMs` (their `iat`, ms since the epoch).
 */
export type SessionRevoke = { type: "session.revoke"; userId: string; revokedAtMs: number };
export const sessionRevoke: Decoder<SessionRevoke> = object({
  type: literal("session.revoke"),
  userId,
  revokedAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});
