// Client↔edge frames: JSON text frames, one object each, discriminated by `type`.
import {
  array,
  boolean,
  decode,
  integer,
  isRecord,
  literal,
  nullable,
  object,
  oneOf,
  optional,
  parseJson,
  refine,
  string,
  taggedUnion,
  text,
  type DecodeResult,
  type Decoder,
} from "./decode.ts";
import { clientMessageId, conversationId, deviceId, mailboxIncarnation, messageId, userId } from "./ids.ts";
import {
  addMembersBatchMax,
  errorMessageLengthMax,
  groupMembersMax,
  groupTitleLengthMax,
  historyPageLimitMax,
  messageBodyLengthMax,
  presenceWatchUsersMax,
  requestIdLengthMax,
  resumeConversationsMax,
  retryAfterMsMax,
  tokenLengthMax,
  typingExpiresInMsMax,
} from "./limits.ts";
import { errorCodeList, type ErrorCode } from "./codes.ts";

const requestId = string({ minLength: 1, maxLength: requestIdLengthMax, pattern: /^[A-Za-z0-9_.:-]+$/ });
const sequence = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });

// ---------------------------------------------------------------------------------------------------
// Client → edge

/** Where a device stands in one conversation: the seq of the last message it holds (0 for none). */
export type ConversationCursor = { conversationId: string; afterSeq: number };

/**
 * MUST be the first frame of a session, within the edge's authentication deadline. `resumeAfterSeq` is
 * the last mailbox seq this device holds (0 for a new device that wants the whole mailbox) and
 * `conversations` its cursor in each conversation it follows (docs/decisions/0009): the edge replays
 * the mailbox events after resumeAfterSeq, and every message after each cursor (and, for each
 * conversation a replayed `joined` event names, after the member's join point), then sends `synced`,
 * then live events and messages. Without resumeAfterSeq the session starts live: no backlog, each
 * conversation from the first message that arrives. `mailboxIncarnation` is the incarnation of the mailbox
 * resumeAfterSeq counts in, as the last `synced` or `resync` named it (docs/decisions/0021): a mailbox of
 * another incarnation, or a resumeAfterSeq beyond the head, is answered `resync`. Send it only with
 * resumeAfterSeq, and only an incarnation an edge sent (an edge that does not know the field refuses it).
 */
export type HelloFrame = {
  type: "hello";
  protocolVersion: number;
  token: string;
  deviceId?: string;
  resumeAfterSeq?: number;
  mailboxIncarnation?: string;
  conversations?: ConversationCursor[];
};
/** Sends a message; retrying with the same clientMessageId yields the same ack, never a second message. */
export type SendFrame = { type: "send"; requestId: string; conversationId: string; clientMessageId: string; body: string };
/** Finds or creates the direct conversation between the user and peerUserId. */
export type OpenDirectFrame = { type: "openDirect"; requestId: string; peerUserId: string };
/**
 * Creates a group. With `clientGroupId` (unique per creator, a UUID fits) a retry names the same group
 * and returns it instead of creating a second one; the first request's title and members stand.
 */
export type CreateGroupFrame = { type: "createGroup"; requestId: string; title: string; memberUserIds: string[]; clientGroupId?: string };
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
/**
 * Replaces the session's token on the open socket: verified like a hello's token, it MUST name the
 * session's user (and device, when it carries device_id). Answered by `refreshed` with the new expiry, or
 * `token_rejected` / `token_user_mismatch`, after which the old expiry stands. Send it only to an edge whose
 * welcome carried `tokenExpiresAtMs` (docs/decisions/0010: an older edge would answer unknown_frame_type).
 */
export type RefreshFrame = { type: "refresh"; requestId: string; token: string };

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
  | DeliveredFrame
  | RefreshFrame;
export type ClientRequestFrame = Exclude<ClientFrame, HelloFrame>;

const position = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
export const conversationCursor: Decoder<ConversationCursor> = object({ conversationId, afterSeq: position });
const helloFrame: Decoder<HelloFrame> = object({
  type: literal("hello"),
  protocolVersion: integer({ min: 0, max: 1_000_000 }),
  token: string({ minLength: 1, maxLength: tokenLengthMax }),
  deviceId: optional(deviceId),
  resumeAfterSeq: optional(position),
  mailboxIncarnation: optional(mailboxIncarnation),
  conversations: optional(
    refine(
      array(conversationCursor, { maxItems: resumeConversationsMax }),
      (cursors) => new Set(cursors.map((cursor) => cursor.conversationId)).size === cursors.length,
      "must not name a conversation twice",
    ),
  ),
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
  // The same allowlist as clientMessageId: both are a client's idempotency key.
  clientGroupId: optional(clientMessageId),
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
const refreshFrame: Decoder<RefreshFrame> = object({
  type: literal("refresh"),
  requestId,
  token: string({ minLength: 1, maxLength: tokenLengthMax }),
});

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
  refresh: refreshFrame,
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

const messageShape = {
  conversationId,
  messageId,
  seq: sequence,
  senderUserId: userId,
  senderDeviceId: deviceId,
  clientMessageId,
  body: text({ minLength: 1, maxLength: messageBodyLengthMax }),
  sentAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
};
export const message: Decoder<Message> = object(messageShape);

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

/**
 * The user became a member of a conversation (created it, was in a direct conversation someone opened,
 * or was added to a group by `addedByUserId`). `afterSeq` is the member's join point: the conversation's
 * last seq when the user joined (0 for a new conversation); a device follows the conversation's messages
 * after it (older ones are in `history`). How a device learns of a conversation it has not seen yet.
 */
export type JoinedEvent = {
  kind: "joined";
  conversationId: string;
  conversationKind: ConversationKind;
  title: string | null;
  afterSeq: number;
  addedByUserId: string;
};

/**
 * An entry of a user's mailbox: what belongs to no conversation's log (docs/decisions/0009). Messages are
 * not mailbox events: they are read from their conversation's log.
 */
export type MailboxEvent = JoinedEvent | ReceiptEvent;

export const receiptEvent: Decoder<ReceiptEvent> = object({
  kind: literal("receipt"),
  conversationId,
  userId,
  readSeq: position,
  deliveredSeq: position,
});
export const joinedEvent: Decoder<JoinedEvent> = object({
  kind: literal("joined"),
  conversationId,
  conversationKind: oneOf<ConversationKind>(["direct", "group"]),
  title: nullable(string({ maxLength: groupTitleLengthMax })),
  afterSeq: position,
  addedByUserId: userId,
});

export const mailboxEvent: Decoder<MailboxEvent> = (input, path) => {
  const kind = typeof input === "object" && input !== null ? (input as { kind?: unknown }).kind : undefined;
  if (kind === "joined") return joinedEvent(input, path);
  if (kind === "receipt") return receiptEvent(input, path);
  return { ok: false, failure: { path: `${path}.kind`, reason: 'must be "joined" or "receipt"' } };
};

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
  /**
   * When the edge closes the session with 4101 unless a `refresh` moves it (ms since the epoch: the token's
   * exp plus the edge's clock tolerance). Its presence also says the edge accepts `refresh`.
   */
  tokenExpiresAtMs?: number;
};
/** Answers a send only after the message is committed in its conversation's cell database. */
export type AckFrame = { type: "ack"; requestId: string; conversationId: string; messageId: string; seq: number; sentAtMs: number };
export type ConversationFrame = { type: "conversation"; requestId: string; conversation: ConversationSummary };
export type HistoryPageFrame = { type: "historyPage"; requestId: string; conversationId: string; messages: Message[]; hasMore: boolean };
/**
 * A mailbox event of a kind this client does not know (docs/decisions/0010): it still takes its seq, so
 * the client advances its cursor over it and shows nothing. Produced only by the client's decoder.
 */
export type UnknownMailboxEvent = { kind: "unknown"; unknownKind: string };

/**
 * One event of the user's mailbox (joined, receipt), in mailbox order with no gap and no duplicate on a
 * session: first the backlog after the hello's resumeAfterSeq, then live events.
 */
export type EventFrame = { type: "event"; seq: number; event: MailboxEvent | UnknownMailboxEvent };
/**
 * One message of a conversation the session follows, in the conversation's seq order with no gap and no
 * duplicate on a session, from the session's start point in that conversation (the hello's cursor, the
 * member's join point, or, in a live session, the first message that arrived): the backlog first, then
 * live messages (the user's own from this and other devices included).
 */
export type MessageFrame = { type: "message"; message: Message };
/**
 * The backlog is delivered: the device holds every mailbox event up to `seq`, and every message of each
 * conversation the hello listed or a replayed `joined` event named, up to its head when it was read;
 * live events and messages follow. `mailboxIncarnation`: the incarnation of the mailbox `seq` counts in
 * (absent while the user has no mailbox yet, and from edges before docs/decisions/0021); a device stores
 * it with the seq and sends both in its next hello.
 */
export type SyncedFrame = { type: "synced"; seq: number; mailboxIncarnation?: string };
/**
 * The mailbox cannot serve the events after the requested seq: they were cut by retention, the seq is
 * beyond the mailbox's head, or the hello's mailboxIncarnation names another mailbox (a restored database,
 * a re-created mailbox, another account's cursor). Reload conversations through history; the session
 * continues from `headSeq` of the mailbox `mailboxIncarnation` (absent as on `synced`), followed by `synced`.
 */
export type ResyncFrame = { type: "resync"; headSeq: number; mailboxIncarnation?: string };
export type PongFrame = { type: "pong"; requestId: string };
/** `retryAfterMs`: wait at least this long before retrying (set with `overloaded`; honoured whatever the code). */
export type ErrorFrame = { type: "error"; requestId?: string; code: ErrorCode; message: string; retryable: boolean; retryAfterMs?: number };
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
/** Answers `refresh`: the session now lasts until `tokenExpiresAtMs` (ms since the epoch). */
export type RefreshedFrame = { type: "refreshed"; requestId: string; tokenExpiresAtMs: number };
/** A watched user's status changed. */
export type PresenceFrame = { type: "presence"; userId: string; status: PresenceStatus; changedAtMs: number };

export type ServerFrame =
  | WelcomeFrame
  | AckFrame
  | ConversationFrame
  | HistoryPageFrame
  | EventFrame
  | MessageFrame
  | SyncedFrame
  | ResyncFrame
  | PongFrame
  | ErrorFrame
  | TypingAckFrame
  | TypingIndicatorFrame
  | PresenceSnapshotFrame
  | PresenceFrame
  | ReceiptAckFrame
  | RefreshedFrame;

const epochMs = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

export const presenceStatus: Decoder<PresenceStatus> = oneOf<PresenceStatus>(["online", "offline"]);
const presenceStateShape = { userId, status: presenceStatus, changedAtMs: nullable(epochMs) };
export const presenceState: Decoder<PresenceState> = object(presenceStateShape);

// ---------------------------------------------------------------------------------------------------
// What clients decode: lenient where docs/decisions/0010 says a newer edge may send more. Unknown fields
// are dropped at every level, an error code this client does not know keeps its `retryable`, and a
// mailbox event of an unknown kind becomes UnknownMailboxEvent. Edges and workers decode strictly.

const lenient = { unknownFields: "ignore" } as const;
const clientMessage: Decoder<Message> = object(messageShape, lenient);
const clientConversationSummary: Decoder<ConversationSummary> = object(
  {
    conversationId,
    kind: oneOf<ConversationKind>(["direct", "group"]),
    title: nullable(string({ maxLength: groupTitleLengthMax })),
    memberUserIds: array(userId, { maxItems: groupMembersMax }),
    lastSeq: position,
  },
  lenient,
);
const clientPresenceState: Decoder<PresenceState> = object(presenceStateShape, lenient);
const clientReceiptEvent: Decoder<ReceiptEvent> = object(
  { kind: literal("receipt"), conversationId, userId, readSeq: position, deliveredSeq: position },
  lenient,
);
const clientJoinedEvent: Decoder<JoinedEvent> = object(
  {
    kind: literal("joined"),
    conversationId,
    conversationKind: oneOf<ConversationKind>(["direct", "group"]),
    title: nullable(string({ maxLength: groupTitleLengthMax })),
    afterSeq: position,
    addedByUserId: userId,
  },
  lenient,
);
const clientMailboxEvent: Decoder<MailboxEvent | UnknownMailboxEvent> = (input, path) => {
  const kind = typeof input === "object" && input !== null ? (input as { kind?: unknown }).kind : undefined;
  if (kind === "joined") return clientJoinedEvent(input, path);
  if (kind === "receipt") return clientReceiptEvent(input, path);
  if (typeof kind === "string" && kind.length <= 64) return { ok: true, value: { kind: "unknown", unknownKind: kind } };
  return { ok: false, failure: { path: `${path}.kind`, reason: "must be a string of at most 64 characters" } };
};
/** An error code this client does not know is kept as `internal` for its type; `retryable` still decides. */
const clientErrorCode: Decoder<ErrorCode> = (input, path) => {
  const known = oneOf<ErrorCode>(errorCodeList)(input, path);
  if (known.ok || typeof input !== "string" || input.length > 64) return known;
  return { ok: true, value: "internal" };
};

export const serverFrame: Decoder<ServerFrame> = taggedUnion<ServerFrame>({
  welcome: object(
    {
      type: literal("welcome"),
      protocolVersion: integer({ min: 0, max: 1_000_000 }),
      sessionId: string({ minLength: 1, maxLength: 64 }),
      userId,
      deviceId,
      cellId: string({ minLength: 1, maxLength: 16 }),
      heartbeatIntervalMs: integer({ min: 1, max: 3_600_000 }),
      tokenExpiresAtMs: optional(epochMs),
    },
    lenient,
  ),
  ack: object(
    {
      type: literal("ack"),
      requestId,
      conversationId,
      messageId,
      seq: sequence,
      sentAtMs: integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    },
    lenient,
  ),
  conversation: object({ type: literal("conversation"), requestId, conversation: clientConversationSummary }, lenient),
  historyPage: object(
    {
      type: literal("historyPage"),
      requestId,
      conversationId,
      messages: array(clientMessage, { maxItems: historyPageLimitMax }),
      hasMore: boolean,
    },
    lenient,
  ),
  event: object({ type: literal("event"), seq: sequence, event: clientMailboxEvent }, lenient),
  message: object({ type: literal("message"), message: clientMessage }, lenient),
  synced: object({ type: literal("synced"), seq: position, mailboxIncarnation: optional(mailboxIncarnation) }, lenient),
  resync: object({ type: literal("resync"), headSeq: position, mailboxIncarnation: optional(mailboxIncarnation) }, lenient),
  pong: object({ type: literal("pong"), requestId }, lenient),
  error: object(
    {
      type: literal("error"),
      requestId: optional(requestId),
      code: clientErrorCode,
      message: string({ maxLength: errorMessageLengthMax }),
      retryable: boolean,
      retryAfterMs: optional(integer({ min: 0, max: retryAfterMsMax })),
    },
    lenient,
  ),
  typingAck: object({ type: literal("typingAck"), requestId }, lenient),
  typing: object(
    {
      type: literal("typing"),
      conversationId,
      userId,
      deviceId,
      expiresInMs: integer({ min: 1, max: typingExpiresInMsMax }),
    },
    lenient,
  ),
  presenceSnapshot: object(
    {
      type: literal("presenceSnapshot"),
      requestId,
      users: array(clientPresenceState, { maxItems: presenceWatchUsersMax }),
    },
    lenient,
  ),
  presence: object({ type: literal("presence"), userId, status: presenceStatus, changedAtMs: epochMs }, lenient),
  receiptAck: object({ type: literal("receiptAck"), requestId, conversationId, readSeq: position, deliveredSeq: position }, lenient),
  refreshed: object({ type: literal("refreshed"), requestId, tokenExpiresAtMs: epochMs }, lenient),
});

/** Every server frame type: what a client may be sent, the closed set an edge counts frames sent by. */
export const serverFrameTypeList = [
  "welcome",
  "ack",
  "conversation",
  "historyPage",
  "event",
  "message",
  "synced",
  "resync",
  "pong",
  "error",
  "typingAck",
  "typing",
  "presenceSnapshot",
  "presence",
  "receiptAck",
  "refreshed",
] as const satisfies readonly ServerFrame["type"][];
const serverFrameTypes = new Set<string>(serverFrameTypeList);

/**
 * Decodes one text frame from an edge, as a client: `value` null is a well-formed frame of a type this
 * client does not know, to be ignored (docs/decisions/0010); a failure is a frame that is not JSON, has
 * no type, or is malformed in a field this client relies on.
 */
export function decodeServerFrame(text: string): DecodeResult<ServerFrame | null> {
  const parsed = parseJson(text);
  if (!parsed.ok) return parsed;
  const type = isRecord(parsed.value) ? parsed.value["type"] : undefined;
  if (typeof type === "string" && !serverFrameTypes.has(type)) return { ok: true, value: null };
  return decode(serverFrame, parsed.value);
}
