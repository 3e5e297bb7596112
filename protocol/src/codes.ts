// Every error code and close code of Cellwire lives here; no other file holds a numeric code literal.
// docs/protocol.md documents each one; a unit test keeps the two in step.

/**
 * Error codes answer one request (or one bad frame); the socket stays open. `retryable` tells a client
 * whether the same request may succeed later unchanged (sends are idempotent by clientMessageId).
 */
export const errorCodes = {
  malformed_frame: { retryable: false, description: "The frame is not a JSON object, or not text." },
  unknown_frame_type: { retryable: false, description: "The frame's type is not one this protocol version knows." },
  invalid_field: { retryable: false, description: "A field is missing, mistyped, too long or not allowed; `message` names it." },
  already_authenticated: { retryable: false, description: "A second hello on an authenticated session." },
  not_a_member: { retryable: false, description: "The conversation does not exist or the user is not one of its members." },
  invalid_peer: { retryable: false, description: "A direct conversation needs another user than oneself." },
  too_many_members: { retryable: false, description: "The group would exceed its member limit." },
  not_a_group: { retryable: false, description: "Members can only be added to group conversations." },
  client_message_id_reused: {
    retryable: false,
    description:
      "The sender already stored another message under this clientMessageId in this conversation; nothing was stored. Send the new message with a new clientMessageId.",
  },
  rate_limited: {
    retryable: true,
    description:
      "Too many requests in flight on this session, or this session (or its user on this edge) used up its rate for this kind of request; not done. Retry after `retryAfterMs` when present.",
  },
  no_cell_available: { retryable: true, description: "No cell is registered to place a new user or conversation." },
  directory_unavailable: { retryable: true, description: "The directory did not answer in time." },
  cell_unavailable: { retryable: true, description: "No worker of the owning cell answered in time." },
  overloaded: {
    retryable: true,
    description: "The edge or the cell is at capacity and refused the request before doing any of it; retry after `retryAfterMs`.",
  },
  deadline_exceeded: {
    retryable: true,
    description:
      "The request's deadline (EDGE_REQUEST_DEADLINE_MS from its arrival at the edge) passed before the cell started it, so it was not done; retry.",
  },
  out_of_order: {
    retryable: true,
    description:
      "A send that this session pipelined behind an earlier send to the same conversation arrived before that one was stored; nothing was stored. Retry the sends in the order they were sent (the SDK does).",
  },
  internal: { retryable: true, description: "An unexpected server error; it has been logged." },
  token_rejected: {
    retryable: false,
    description: "The token of a `refresh` failed verification (signature, claims, expired or revoked); the session keeps its old expiry.",
  },
  token_user_mismatch: {
    retryable: false,
    description: "The token of a `refresh` names another user (or device) than the session's; the session keeps its old expiry.",
  },
} as const satisfies Record<string, { retryable: boolean; description: string }>;

export type ErrorCode = keyof typeof errorCodes;
export const errorCodeList = Object.keys(errorCodes) as ErrorCode[];

export function isRetryable(code: ErrorCode): boolean {
  return errorCodes[code].retryable;
}

/**
 * Cell-internal error codes (edge↔cell and cell↔directory). Edges map them to client error codes in one
 * place; a client never sees these.
 */
export const cellErrorCodes = {
  not_owner: { retryable: true, description: "The worker does not own the key in its view of the ring; route again." },
  unknown_cell: { retryable: false, description: "The cell id is not registered in the directory." },
  not_found: { retryable: false, description: "No directory entry exists for the key." },
  moving: { retryable: true, description: "The user's mailbox or the conversation is being migrated between cells; retry shortly." },
  entry_changed: {
    retryable: false,
    description: "The directory entry is no longer on the cell (or at the epoch) a move expected: another move won; look it up again.",
  },
} as const satisfies Record<string, { retryable: boolean; description: string }>;

export type CellErrorCode = keyof typeof cellErrorCodes | ErrorCode;

/**
 * WebSocket close codes, in ranges that tell a client what to do next:
 * - 4000–4099: transient; reconnect with backoff.
 * - 4100–4199: credentials; fetch a fresh token, then reconnect.
 * - 4200–4299: the client is wrong; do not reconnect automatically.
 * 1000 (normal), 1001 (going away) and 1006 (abnormal) follow RFC 6455 and mean reconnect; 1009 (message
 * too big) is sent by the edge for frames over the size limit and means do not resend that frame.
 */
export const closeCodes = {
  going_away: { code: 4000, description: "The edge is shutting down." },
  slow_consumer: { code: 4001, description: "The client read too slowly; the edge's send buffer for it was full." },
  internal_error: { code: 4002, description: "The edge met an unexpected error on this session." },
  unavailable: {
    code: 4003,
    description: "A service the session needs (the directory or the user's cell) did not answer; reconnect later.",
  },
  stale_session: {
    code: 4004,
    description:
      "The session sent nothing for two heartbeat intervals and its user opened another past the per-user limit: it was closed to make room.",
  },
  // Was 4202 (stop) before issue 11: a client whose gone sessions were still counted was told to stop for
  // good. 4202 is retired, never to be reused (docs/decisions/0018).
  too_many_sessions: {
    code: 4005,
    description: "The user already holds the maximum number of live sessions on this edge; reconnect later.",
  },
  token_invalid: { code: 4100, description: "The token failed verification (signature, issuer, audience or claims)." },
  token_expired: { code: 4101, description: "The token's exp has passed." },
  authentication_timeout: { code: 4102, description: "No hello frame arrived within the authentication deadline." },
  token_revoked: { code: 4103, description: "An operator revoked the user's sessions; tokens issued before the revocation are refused." },
  protocol_violation: { code: 4200, description: "A frame other than hello arrived before authentication, or a binary frame." },
  unsupported_protocol_version: { code: 4201, description: "The hello asked for a protocol version this edge does not speak." },
} as const satisfies Record<string, { code: number; description: string }>;

/**
 * HTTP statuses an edge answers a WebSocket upgrade with instead of opening the socket (admission at the
 * door, before any session exists). A browser sees only a failed connection (close 1006); SDKs reconnect
 * with backoff, which is what each asks for except origin_not_allowed, which no retry fixes.
 */
export const upgradeRefusals = {
  origin_not_allowed: { status: 403, statusText: "Forbidden", description: "The request's Origin is not in the edge's allowlist." },
  too_many_connections_from_address: {
    status: 429,
    statusText: "Too Many Requests",
    description: "The client's address already holds the edge's maximum of sockets.",
  },
  unauthenticated_full: {
    status: 503,
    statusText: "Service Unavailable",
    description: "The edge already holds its maximum of sockets that have not authenticated yet.",
  },
} as const satisfies Record<string, { status: number; statusText: string; description: string }>;

export type UpgradeRefusal = keyof typeof upgradeRefusals;
export const upgradeRefusalList = Object.keys(upgradeRefusals) as UpgradeRefusal[];

export type CloseReason = keyof typeof closeCodes;
export const closeReasonList = Object.keys(closeCodes) as CloseReason[];

export type CloseAdvice = "reconnect" | "refresh_token" | "stop";

/** Standard codes: 1000 normal, 1001 going away, 1006 abnormal, 1009 message too big. */
export const standardCloseCodes = { normal: 1000, goingAway: 1001, abnormal: 1006, messageTooBig: 1009 } as const;

export function closeAdvice(code: number): CloseAdvice {
  if (code >= 4000 && code <= 4099) return "reconnect";
  if (code >= 4100 && code <= 4199) return "refresh_token";
  if (code >= 4200 && code <= 4299) return "stop";
  if (code === standardCloseCodes.messageTooBig) return "reconnect";
  return "reconnect";
}

export function closeReasonOf(code: number): CloseReason | undefined {
  return closeReasonList.find((reason) => closeCodes[reason].code === code);
}
