// Messages between services over NATS: edge→cell requests, cell→edge deliveries, and requests to the
// directory. All JSON, discriminated by `type`, decoded at the receiving end like client frames.
import {
  array,
  boolean,
  decode,
  integer,
  literal,
  nullable,
  object,
  oneOf,
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
  groupMembersMax,
  groupTitleLengthMax,
  historyPageLimitMax,
  mailboxPageLimitMax,
  messageBodyLengthMax,
  presenceHeartbeatUsersMax,
  typingExpiresInMsMax,
} from "./limits.ts";
import { errorCodeList, type CellErrorCode } from "./codes.ts";
import {
  conversationSummary,
  mailboxEvent,
  message,
  presenceStatus,
  sequencedEvent,
  type ConversationSummary,
  type MailboxEvent,
  type Message,
  type PresenceStatus,
  type ReceiptEvent,
  type SequencedEvent,
} from "./frames.ts";

const sequence = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const cellErrorCode: Decoder<CellErrorCode> = oneOf<CellErrorCode>([...errorCodeList, "not_owner", "unknown_cell", "not_found"]);
const errorText = string({ maxLength: 2000 });
const eventId = string({ minLength: 1, maxLength: 200, pattern: /^[A-Za-z0-9_-]+$/ });

// ---------------------------------------------------------------------------------------------------
// Edge → cell worker (request/reply on the owner's subject, see subjects.ts)

/** Stores a message in its conversation's home cell; the reply comes only after the commit. */
export type CellSendRequest = {
  type: "cell.send";
  senderUserId: string;
  senderDeviceId: string;
  conversationId: string;
  clientMessageId: string;
  body: string;
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
 * Read-only: the members of a conversation, asked by an edge on behalf of `userId` (a typist), at the
 * conversation's owner. Answered by `cell.members`, or `not_a_member` when the conversation does not
 * exist or `userId` is not a member (so a non-member learns nothing). Writes nothing.
 */
export type CellMembersRequest = { type: "cell.members"; conversationId: string; userId: string };

/**
 * Raises `userId`'s read (which raises delivered too) or delivered position in the conversation to
 * `seq`, at the conversation's owner; a lower seq changes nothing. Answered by `cell.receipt`.
 */
export type CellReceiptRequest = { type: "cell.receipt"; userId: string; conversationId: string; position: "read" | "delivered"; seq: number };

export type CellRequest =
  | CellReceiptRequest
  | CellSendRequest
  | CellOpenDirectRequest
  | CellCreateGroupRequest
  | CellAddMembersRequest
  | CellHistoryRequest
  | CellAppendMailboxRequest
  | CellMailboxPageRequest
  | CellMembersRequest;

export const cellRequest: Decoder<CellRequest> = taggedUnion<CellRequest>({
  "cell.send": object({
    type: literal("cell.send"),
    senderUserId: userId,
    senderDeviceId: deviceId,
    conversationId,
    clientMessageId,
    body: text({ minLength: 1, maxLength: messageBodyLengthMax }),
  }),
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
  "cell.mailboxPage": object({
    type: literal("cell.mailboxPage"),
    userId,
    afterSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    limit: integer({ min: 0, max: mailboxPageLimitMax }),
  }),
  "cell.members": object({ type: literal("cell.members"), conversationId, userId }),
  "cell.receipt": object({
    type: literal("cell.receipt"),
    userId,
    conversationId,
    position: oneOf(["read", "delivered"]),
    seq: sequence,
  }),
});

/** The ring key of a user's mailbox; conversation keys are their ids (which never start with "user:"). */
export function userRingKey(userIdValue: string): string {
  return `user:${userIdValue}`;
}

/** The key a request is routed by on its cell's ring: its conversation, or for mailbox requests its user. */
export function cellRequestKey(request: CellRequest): string {
  switch (request.type) {
    case "cell.appendMailbox":
    case "cell.mailboxPage":
      return userRingKey(request.userId);
    default:
      return request.conversationId;
  }
}

/** The mailbox event id of a message: one mailbox entry per user and message. */
export function messageEventId(messageIdValue: string): string {
  return `message-${messageIdValue}`;
}

/** The mailbox event id of a receipt: one per position reached, so a relayed copy is applied once. */
export function receiptEventId(event: ReceiptEvent): string {
  return `receipt-${event.conversationId}-${event.userId}-${event.readSeq}-${event.deliveredSeq}`;
}

/** The only event id a mailbox event may be appended under. */
export function mailboxEventId(event: MailboxEvent): string {
  return event.kind === "message" ? messageEventId(event.message.messageId) : receiptEventId(event);
}

/** Answers `cell.receipt`: the positions after the request; `advanced` says whether it moved them. */
export type CellReceiptReply = { type: "cell.receipt"; conversationId: string; userId: string; readSeq: number; deliveredSeq: number; advanced: boolean };

export type CellStoredReply = { type: "cell.stored"; message: Message; deduplicated: boolean };
export type CellConversationReply = { type: "cell.conversation"; conversation: ConversationSummary };
export type CellHistoryReply = { type: "cell.historyPage"; conversationId: string; messages: Message[]; hasMore: boolean };
export type CellErrorReply = { type: "cell.error"; code: CellErrorCode; message: string };
export type CellAppendedReply = { type: "cell.appended"; userId: string; seq: number; deduplicated: boolean };
/**
 * `floorSeq`: every event up to it was cut by retention (0 when none was); a page asked after a seq
 * below the floor cannot be served and the device must resync. `headSeq`: the newest event's seq.
 */
export type CellMailboxEventsReply = { type: "cell.mailboxEvents"; userId: string; events: SequencedEvent[]; headSeq: number; floorSeq: number };
/** Answers `cell.members`: every member, sorted, the asker included. */
export type CellMembersReply = { type: "cell.members"; conversationId: string; memberUserIds: string[] };

export type CellReply =
  | CellReceiptReply
  | CellStoredReply
  | CellConversationReply
  | CellHistoryReply
  | CellAppendedReply
  | CellMailboxEventsReply
  | CellMembersReply
  | CellErrorReply;

export const cellReply: Decoder<CellReply> = taggedUnion<CellReply>({
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
  }),
  "cell.members": object({ type: literal("cell.members"), conversationId, memberUserIds: array(userId, { minItems: 1, maxItems: groupMembersMax }) }),
  "cell.error": object({ type: literal("cell.error"), code: cellErrorCode, message: errorText }),
  "cell.receipt": object({
    type: literal("cell.receipt"),
    conversationId,
    userId,
    readSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    deliveredSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    advanced: boolean,
  }),
});

// ---------------------------------------------------------------------------------------------------
// Cell → edges: published on a user's delivery subject; every edge holding that user's sessions forwards it.

/** Published by the owner of a user's mailbox after an event is appended. */
export type Delivery = { type: "delivery.event"; recipientUserId: string; seq: number; event: MailboxEvent };

export const delivery: Decoder<Delivery> = taggedUnion<Delivery>({
  "delivery.event": object({ type: literal("delivery.event"), recipientUserId: userId, seq: sequence, event: mailboxEvent }),
});

/**
 * Published by the typist's edge to each member of the conversation (the typist included, for their
 * other devices). Ephemeral: no seq, never stored; an edge forwards it to every session of the recipient
 * except those of the typing device.
 */
export type TypingDelivery = {
  type: "delivery.typing";
  recipientUserId: string;
  conversationId: string;
  userId: string;
  deviceId: string;
  expiresInMs: number;
};
/** Anything published on a user's delivery subject: mailbox events, and ephemeral typing indicators. */
export type DeliveryMessage = Delivery | TypingDelivery;

export const deliveryMessage: Decoder<DeliveryMessage> = taggedUnion<DeliveryMessage>({
  "delivery.event": delivery,
  "delivery.typing": object({
    type: literal("delivery.typing"),
    recipientUserId: userId,
    conversationId,
    userId,
    deviceId,
    expiresInMs: integer({ min: 1, max: typingExpiresInMsMax }),
  }),
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
export type PresenceClaimChange = { type: "presence.change"; edgeInstanceId: string; claimTtlMs: number; userId: string; status: PresenceStatus };
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

export type DirectoryRequest =
  | DirectoryResolveUser
  | DirectoryAssignUser
  | DirectoryLookupUser
  | DirectoryLookupConversation
  | DirectoryPlaceConversation
  | DirectoryRegisterCell
  | DirectoryListCells;

const weight = integer({ min: 1, max: 1_000_000 });

export const directoryRequest: Decoder<DirectoryRequest> = taggedUnion<DirectoryRequest>({
  "directory.resolveUser": object({ type: literal("directory.resolveUser"), userId }),
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
export type DirectoryReply = DirectoryEntryReply | DirectoryCellsReply | DirectoryErrorReply;

const directoryEntry: Decoder<DirectoryEntry> = object({
  kind: oneOf(["user", "conversation"]),
  id: string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ }),
  cellId,
  epoch: integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
});
const cellRecord: Decoder<CellRecord> = object({ cellId, weight, state: oneOf(["active", "draining"]) });

export const directoryReply: Decoder<DirectoryReply> = taggedUnion<DirectoryReply>({
  "directory.entry": object({
    type: literal("directory.entry"),
    entry: directoryEntry,
    placed: boolean,
  }),
  "directory.cells": object({ type: literal("directory.cells"), cells: array(cellRecord, { maxItems: 1000 }) }),
  "directory.error": object({ type: literal("directory.error"), code: cellErrorCode, message: errorText }),
});

/** Published on the directory's change subject whenever an entry moves (used by edge caches). */
export type DirectoryChange = { type: "directory.changed"; entry: DirectoryEntry };
export const directoryChange: Decoder<DirectoryChange> = object({ type: literal("directory.changed"), entry: directoryEntry });

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
