// What each request frame expects back and whether it is safe to transmit twice. Pure tables, so the
// reconnect and retry rules in BEHAVIOUR.md read off one place.
import type { ClientRequestFrame, ServerFrame } from "@cellwire/protocol";

export type RequestKind = ClientRequestFrame["type"];

/** A request frame before the client gives it a requestId (each transmission gets a fresh one). */
export type RequestBody = ClientRequestFrame extends infer Frame
  ? Frame extends ClientRequestFrame
    ? Omit<Frame, "requestId">
    : never
  : never;
export type RequestBodyOf<K extends RequestKind> = Extract<RequestBody, { type: K }>;

const replyTypes = {
  send: "ack",
  openDirect: "conversation",
  createGroup: "conversation",
  addMembers: "conversation",
  history: "historyPage",
  ping: "pong",
  typing: "typingAck",
  watchPresence: "presenceSnapshot",
  read: "receiptAck",
  delivered: "receiptAck",
  refresh: "refreshed",
} as const satisfies Record<RequestKind, ServerFrame["type"]>;

export type ReplyFrameOf<K extends RequestKind> = Extract<ServerFrame, { type: (typeof replyTypes)[K] }>;

/**
 * Requests the server handles idempotently: a send is deduplicated by clientMessageId, a createGroup by its
 * clientGroupId (the group's id is derived from it), openDirect finds the pair's one conversation, history
 * and ping only read, watchPresence replaces the watched set. These are transmitted again after a
 * reconnect and retried on a retryable error; addMembers is not, because its first transmission may
 * already have taken effect (and its answer lists the members it added), and
 * neither is typing, which is stale by the time a retry could go out, nor refresh, whose session is gone. read and delivered only raise a
 * position to a seq (a repeat changes nothing), so they are safe to transmit again.
 */
const idempotentKinds: Readonly<Record<RequestKind, boolean>> = {
  send: true,
  openDirect: true,
  history: true,
  ping: true,
  watchPresence: true,
  createGroup: true,
  addMembers: false,
  typing: false,
  read: true,
  delivered: true,
  // A refresh belongs to its session: after a reconnect the new hello carries a fresh token instead.
  refresh: false,
};

export function isIdempotent(kind: RequestKind): boolean {
  return idempotentKinds[kind];
}

export function expectedReplyType(kind: RequestKind): ServerFrame["type"] {
  return replyTypes[kind];
}

/** Whether `frame` is the reply type `kind` expects (not a type guard: callers narrow by their own K). */
export function isReplyOf(kind: RequestKind, frame: ServerFrame): boolean {
  return frame.type === replyTypes[kind];
}
