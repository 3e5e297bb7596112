// Client↔edge frames: JSON text frames, one object each, discriminated by `type`.
import {
  array,
  boolean,
  decode,
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
import { clientMessageId, conversationId, deviceId, messageId, userId } from "./ids.ts";
import {
  addMembersBatchMax,
  groupMembersMax,
  groupTitleLengthMax,
  historyPageLimitMax,
  messageBodyLengthMax,
  presenceWatchUsersMax,
  requestIdLengthMax,
  tokenLengthMax,
  typingExpiresInMsMax,
} from "./limits.ts";
import { errorCodeList, type ErrorCode } from "./codes.ts";

const requestId = string({ minLength: 1, maxLength: requestIdLengthMax, pattern: /^[A-Za-z0-9_.:-]+$/ });
const sequence = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });

// ---------------------------------------------------------------------------------------------------
// Client → edge

/**
 * MUST be the first frame of a session, within the edge's authentication deadline. `resumeAfterSeq` is
 * the last mailbox seq this device holds (0 for a new device that wants the whole mailbox): the edge
 * replays every event after it, then sends `synced`, then live events. Without it the session starts
 * live from the mailbox's head.
 */
export type HelloFrame = { type: "hello"; protocolVersion: number; token: string; deviceId?: string; resumeAfterSeq?: number };
/** Sends a message; retrying with the same clientMessageId yields the same ack, never a second message. */
export type SendFrame = { type: "send"; requestId: string; conversationId: string; clientMessageId: string; body: string };
/** Finds or creates the direct conversation between the user and peerUserId. */
export type OpenDirectFrame = { type: "openDirect"; requestId: string; peerUserId: string };
export type CreateGroupFrame = { type: "createGroup"; requestId: string; title: string; memberUserIds: string[] };
export type AddMembersFrame = { type: "addMembers"; requestId: string; conversationId: string; userIds: string[] };
/**
 * A page of history: the newest `limit` messages with seq < beforeSeq (all when absent), returned oldest
 * first; `hasMore` says older ones exist (ask again with beforeSeq = the first message's seq).
 */
export type HistoryFrame = { type: "history"; requestId: string; conversationId: string; beforeSeq?: number; limit?: number };
export type PingFrame = { type: "ping"; requestId: string };
/**
 * The user is typing in a conversation they are a member of: the other members' devices, and the user's
 * other devices, receive a `typing` indicator that lapses by itself. Answered by `typingAck`. Ephemeral:
 * never stored, never replayed.
 */
export type TypingFrame = { type: "typing"; requestId: string; conversationId: string };
/**
 * Replaces the set of users whose presence this session watches (empty stops watching). Answered by
 * `presenceSnapshot` with the state of each; `presence` frames follow on every change.
 */
export type WatchPresenceFrame = { type: "watchPresence"; requestId: string; userIds: string[] };
/**
 * The user has read the conversation up to its message `seq` (a conversation seq, at most its last).
 * Monotonic: a lower seq than the stored one changes nothing. Reading also counts as delivered. Answered
 * by `receiptAck`; when the position advanced, a `receipt` mailbox event reaches the members.
 */
export type ReadFrame = { type: "read"; requestId: string; conversationId: string; seq: number };
/**
 * A device of the user holds the conversation's messages up to `seq`; sent by the SDK by itself. Same
 * rules as `read`, for the delivered position.
 */
export type DeliveredFrame = { type: "delivered"; requestId: string; conversationId: string; seq: number };

export type ClientFrame =
  | HelloFrame
  | SendFrame
  | OpenDirectFrame
  | CreateGroupFrame
  | AddMembersFrame
  | HistoryFrame
  | PingFrame
  | TypingFrame
  | WatchPresenceFrame
  | ReadFrame
  | DeliveredFrame;
export type ClientRequestFrame = Exclude<ClientFrame, HelloFrame>;

const helloFrame: Decoder<HelloFrame> = object({
  type: literal("hello"),
  protocolVersion: integer({ min: 0, max: 1_000_000 }),
  token: string({ minLength: 1, maxLength: tokenLengthMax }),
  deviceId: optional(deviceId),
  resumeAfterSeq: optional(integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
});
const sendFrame: Decoder<SendFrame> = object({
  type: literal("send"),
  requestId,
  conversationId,
  clientMessageId,
  body: text({ minLength: 1, maxLength: messageBodyLengthMax }),
});
const openDirectFrame: Decoder<OpenDirectFrame> = object({ type: literal("openDirect"), requestId, peerUserId: userId });
const createGroupFrame: Decoder<CreateGroupFrame> = object({
  type: literal("createGroup"),
  requestId,
  title: text({ minLength: 1, maxLength: groupTitleLengthMax }),
  memberUserIds: array(userId, { maxItems: groupMembersMax - 1, unique: true }),
});
const addMembersFrame: Decoder<AddMembersFrame> = object({
  type: literal("addMembers"),
  requestId,
  conversationId,
  userIds: array(userId, { minItems: 1, maxItems: addMembersBatchMax, unique: true }),
});
const historyFrame: Decoder<HistoryFrame> = object({
  type: literal("history"),
  requestId,
  conversationId,
  beforeSeq: optional(sequence),
  limit: optional(integer({ min: 1, max: historyPageLimitMax })),
});
const pingFrame: Decoder<PingFrame> = object({ type: literal("ping"), requestId });
const typingFrame: Decoder<TypingFrame> = object({ type: literal("typing"), requestId, conversationId });
const watchPresenceFrame: Decoder<WatchPresenceFrame> = object({
  type: literal("watchPresence"),
  requestId,
  userIds: array(userId, { maxItems: presenceWatchUsersMax, unique: true }),
});
const readFrame: Decoder<ReadFrame> = object({ type: literal("read"), requestId, conversationId, seq: sequence });
const deliveredFrame: Decoder<DeliveredFrame> = object({ type: literal("delivered"), requestId, conversationId, seq: sequence });

export const clientFrame: Decoder<ClientFrame> = taggedUnion<ClientFrame>({
  hello: helloFrame,
  send: sendFrame,
  openDirect: openDirectFrame,
  createGroup: createGroupFrame,
  addMembers: addMembersFrame,
  history: historyFrame,
  ping: pingFrame,
  typing: typingFrame,
  watchPresence: watchPresenceFrame,
  read: readFrame,
  delivered: deliveredFrame,
});

export type ClientFrameFailure =
  | { code: "malformed_frame"; message: string; requestId?: string }
  | { code: "unknown_frame_type"; message: string; requestId?: string }
  | { code: "invalid_field"; message: string; requestId?: string };

/**
 * Decodes one text frame from a client. On failure it names the error code to answer with and, where the
 * frame carried a usable requestId, that id, so the client can match the error to its request.
 */
export function decodeClientFrame(text: string): { ok: true; frame: ClientFrame } | { ok: false; failure: ClientFrameFailure } {
  const parsed = parseJson(text);
  if (!parsed.ok || typeof parsed.value !== "object" || parsed.value === null || Array.isArray(parsed.value)) {
    return { ok: false, failure: { code: "malformed_frame", message: "a frame must be one JSON object" } };
  }
  const raw = parsed.value as Record<string, unknown>;
  const candidateRequestId = requestId(raw["requestId"], "$.requestId");
  const echo = candidateRequestId.ok ? { requestId: candidateRequestId.value } : {};
  const result = decode(clientFrame, raw);
  if (result.ok) return { ok: true, frame: result.value };
  const { path, reason } = result.failure;
  const code = path === "$.type" && typeof raw["type"] === "string" ? "unknown_frame_type" : "invalid_field";
  return { ok: false, failure: { code, message: `${path} ${reason}`, ...echo } };
}

// ---------------------------------------------------------------------------------------------------
// Shared shapes

export type Message = {
  conversationId: string;
  messageId: string;
  seq: number;
  senderUserId: string;
  senderDeviceId: string;
  clientMessageId: string;
  body: string;
  sentAtMs: number;
};

export const message: Decoder<Message> = object({
  conversationId,
  messageId,
  seq: sequence,
  senderUserId: userId,
  senderDeviceId: deviceId,
  clientMessageId,
  body: text({ minLength: 1, maxLength: messageBodyLengthMax }),
  sentAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});

export type ConversationKind = "direct" | "group";
export type ConversationSummary = {
  conversationId: string;
  kind: ConversationKind;
  title: string | null;
  memberUserIds: string[];
  lastSeq: number;
};

export const conversationSummary: Decoder<ConversationSummary> = object({
  conversationId,
  kind: oneOf(["direct", "group"]),
  title: nullable(string({ maxLength: groupTitleLengthMax })),
  memberUserIds: array(userId, { maxItems: groupMembersMax }),
  lastSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});

/**
 * A member's read and delivered positions in a conversation moved forward (conversation seqs; 0 for
 * none). Reaches the members' mailboxes (the user's own included, so read state syncs across devices;
 * only the user's own in groups above receiptFanOutMembersMax).
 */
export type ReceiptEvent = { kind: "receipt"; conversationId: string; userId: string; readSeq: number; deliveredSeq: number };

/** An entry of a user's mailbox. Later kinds (membership changes) extend this union. */
export type MailboxEvent = { kind: "message"; message: Message } | ReceiptEvent;

const position = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
export const receiptEvent: Decoder<ReceiptEvent> = object({
  kind: literal("receipt"),
  conversationId,
  userId,
  readSeq: position,
  deliveredSeq: position,
});
const messageEvent: Decoder<{ kind: "message"; message: Message }> = object({ kind: literal("message"), message });

export const mailboxEvent: Decoder<MailboxEvent> = (input, path) => {
  const kind = typeof input === "object" && input !== null ? (input as { kind?: unknown }).kind : undefined;
  if (kind === "message") return messageEvent(input, path);
  if (kind === "receipt") return receiptEvent(input, path);
  return { ok: false, failure: { path: `${path}.kind`, reason: "must be \"message\" or \"receipt\"" } };
};

/** The message a mailbox event carries; undefined for other kinds (receipts). */
export function messageOf(event: MailboxEvent): Message | undefined {
  return event.kind === "message" ? event.message : undefined;
}

/** A mailbox event with its place in the user's gapless mailbox sequence. */
export type SequencedEvent = { seq: number; event: MailboxEvent };
export const sequencedEvent: Decoder<SequencedEvent> = object({ seq: sequence, event: mailboxEvent });

// ---------------------------------------------------------------------------------------------------
// Edge → client

export type WelcomeFrame = {
  type: "welcome";
  protocolVersion: number;
  sessionId: string;
  userId: string;
  deviceId: string;
  cellId: string;
  heartbeatIntervalMs: number;
};
/** Answers a send only after the message is committed in its conversation's cell database. */
export type AckFrame = { type: "ack"; requestId: string; conversationId: string; messageId: string; seq: number; sentAtMs: number };
export type ConversationFrame = { type: "conversation"; requestId: string; conversation: ConversationSummary };
export type HistoryPageFrame = { type: "historyPage"; requestId: string; conversationId: string; messages: Message[]; hasMore: boolean };
/**
 * One event of the user's mailbox, in mailbox order with no gap and no duplicate on a session: first
 * the backlog after the hello's resumeAfterSeq, then live events (messages of any of the user's
 * conversations, the user's own from other devices included).
 */
export type EventFrame = { type: "event"; seq: number; event: MailboxEvent };
/** The backlog is delivered: the device holds every event up to `seq`; live events follow. */
export type SyncedFrame = { type: "synced"; seq: number };
/**
 * The mailbox cannot serve the events after the requested seq (they were cut by retention): reload
 * conversations through history; the session continues from `headSeq`, followed by `synced`.
 */
export type ResyncFrame = { type: "resync"; headSeq: number };
export type PongFrame = { type: "pong"; requestId: string };
export type ErrorFrame = { type: "error"; requestId?: string; code: ErrorCode; message: string; retryable: boolean };
/** Answers a `typing` frame: the indicator was sent to the conversation's members. */
export type TypingAckFrame = { type: "typingAck"; requestId: string };
/**
 * `userId` (on device `deviceId`) is typing in `conversationId`: show it for `expiresInMs` from receipt
 * unless another `typing` of the same user and device refreshes it. No stop frame is sent: it lapses.
 */
export type TypingIndicatorFrame = { type: "typing"; conversationId: string; userId: string; deviceId: string; expiresInMs: number };

export type PresenceStatus = "online" | "offline";
/**
 * A user is online while at least one session of theirs is open on any edge. `changedAtMs`: when the
 * edge that reports it saw the status begin, by its clock (ms since the epoch); null when the status is
 * offline and the edge has not seen the user online since it started.
 */
export type PresenceState = { userId: string; status: PresenceStatus; changedAtMs: number | null };
/** Answers `watchPresence`: the current state of each watched user, in the order asked. */
export type PresenceSnapshotFrame = { type: "presenceSnapshot"; requestId: string; users: PresenceState[] };
/** Answers `read` and `delivered`: the user's positions in the conversation after the request. */
export type ReceiptAckFrame = { type: "receiptAck"; requestId: string; conversationId: string; readSeq: number; deliveredSeq: number };
/** A watched user's status changed. */
export type PresenceFrame = { type: "presence"; userId: string; status: PresenceStatus; changedAtMs: number };

export type ServerFrame =
  | WelcomeFrame
  | AckFrame
  | ConversationFrame
  | HistoryPageFrame
  | EventFrame
  | SyncedFrame
  | ResyncFrame
  | PongFrame
  | ErrorFrame
  | TypingAckFrame
  | TypingIndicatorFrame
  | PresenceSnapshotFrame
  | PresenceFrame
  | ReceiptAckFrame;

const errorCode: Decoder<ErrorCode> = oneOf<ErrorCode>(errorCodeList);
const epochMs = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

export const presenceStatus: Decoder<PresenceStatus> = oneOf<PresenceStatus>(["online", "offline"]);
export const presenceState: Decoder<PresenceState> = object({ userId, status: presenceStatus, changedAtMs: nullable(epochMs) });

export const serverFrame: Decoder<ServerFrame> = taggedUnion<ServerFrame>({
  welcome: object({
    type: literal("welcome"),
    protocolVersion: integer({ min: 0, max: 1_000_000 }),
    sessionId: string({ minLength: 1, maxLength: 64 }),
    userId,
    deviceId,
    cellId: string({ minLength: 1, maxLength: 16 }),
    heartbeatIntervalMs: integer({ min: 1, max: 3_600_000 }),
  }),
  ack: object({
    type: literal("ack"),
    requestId,
    conversationId,
    messageId,
    seq: sequence,
    sentAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  }),
  conversation: object({ type: literal("conversation"), requestId, conversation: conversationSummary }),
  historyPage: object({
    type: literal("historyPage"),
    requestId,
    conversationId,
    messages: array(message, { maxItems: historyPageLimitMax }),
    hasMore: boolean,
  }),
  event: object({ type: literal("event"), seq: sequence, event: mailboxEvent }),
  synced: object({ type: literal("synced"), seq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) }),
  resync: object({ type: literal("resync"), headSeq: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) }),
  pong: object({ type: literal("pong"), requestId }),
  error: object({
    type: literal("error"),
    requestId: optional(requestId),
    code: errorCode,
    message: string({ maxLength: 1000 }),
    retryable: boolean,
  }),
  typingAck: object({ type: literal("typingAck"), requestId }),
  typing: object({
    type: literal("typing"),
    conversationId,
    userId,
    deviceId,
    expiresInMs: integer({ min: 1, max: typingExpiresInMsMax }),
  }),
  presenceSnapshot: object({
    type: literal("presenceSnapshot"),
    requestId,
    users: array(presenceState, { maxItems: presenceWatchUsersMax }),
  }),
  presence: object({ type: literal("presence"), userId, status: presenceStatus, changedAtMs: epochMs }),
  receiptAck: object({ type: literal("receiptAck"), requestId, conversationId, readSeq: position, deliveredSeq: position }),
});

export function decodeServerFrame(text: string): DecodeResult<ServerFrame> {
  const parsed = parseJson(text);
  if (!parsed.ok) return parsed;
  return decode(serverFrame, parsed.value);
}
