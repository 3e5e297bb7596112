// @cellwire/client: the SDK browsers, Node programs, the CLI and the load tests use to talk to an edge.
// Depends on @cellwire/protocol only; runs in browsers and in Node (pass `ws`'s WebSocket there).
export {
  CellwireClient,
  type Ack,
  type CellwireClientEvents,
  type CellwireClientOptions,
  type HistoryPage,
  type Joined,
  type Positions,
  type ReadPositions,
  type ReceivedEvent,
  type Receipt,
  type Resync,
  type StateChange,
  type Synced,
  type TokenProvider,
  type TokenRequest,
  type Welcome,
} from "./cellwire-client.ts";
export { CellwireClientError, type CellwireClientErrorCode } from "./errors.ts";
export { defaultBackoffOptions, type BackoffOptions, type RandomSource } from "./backoff.ts";
export type { CancelTimer, Clock } from "./clock.ts";
export type { ClosedReason, ConnectionStateName, TokenReason } from "./connection-machine.ts";
export type { Unsubscribe } from "./listeners.ts";
export type { TypingIndicator, TypingStopped } from "./typing-indicators.ts";
export type { WebSocketConstructor, WebSocketLike } from "./websocket-like.ts";
export type {
  ConversationKind,
  ConversationSummary,
  ErrorCode,
  JoinedEvent,
  MailboxEvent,
  Message,
  PresenceState,
  PresenceStatus,
  ReceiptEvent,
  UnknownMailboxEvent,
} from "@cellwire/protocol";
// Id and size checks for callers that validate input before it reaches the wire (the web page does).
export { isConversationId, isDeviceId, isUserId, messageBodyLengthMax } from "@cellwire/protocol";
