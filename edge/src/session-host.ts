// What a session needs of its edge: the limits, services and callbacks EdgeCore gives it. EdgeCore
// creates the sessions and each session calls back into it; naming the host here lets session.ts depend
// on this contract rather than on EdgeCore, so the two files do not import each other.
import type { ServerFrame, WatchPresenceFrame } from "@cellwire/protocol";
import type { ConcurrencyLimiter, ServiceLogger, TraceIds } from "@cellwire/cluster";
import type { RevocationList } from "./auth/revocation-list.ts";
import type { Identity, TokenVerifier } from "./auth/token-verifier.ts";
import type { DeliverySource } from "./delivery-hub.ts";
import type { EdgeConfig } from "./config.ts";
import type { SessionMetrics } from "./edge-metrics.ts";
import type { PresenceAccess } from "./presence/presence-access.ts";
import type { PresenceSource } from "./presence/presence-hub.ts";
import type { UserRateLimits } from "./rate-limit/request-rate-limits.ts";
import type { RequestHandler } from "./request-handler.ts";
import type { TypingService } from "./typing/typing-relay.ts";

export type SendOutcome = "sent" | "backpressure" | "dropped";

/** What the core needs of a socket. MUST NOT be called after the socket reported its close. */
export interface SessionTransport {
  /**
   * The write's outcome; a transport that writes later (at the end of the turn) answers "sent" and
   * reports a failed write to the session's `sendReported`.
   */
  send(text: string): SendOutcome;
  bufferedBytes(): number;
  close(code: number, reason: string): void;
}

/** The limits a session keeps to: these fields of the edge's config, each documented there. */
export type EdgeLimits = Pick<
  EdgeConfig,
  | "authTimeoutMs"
  | "heartbeatIntervalMs"
  | "sessionsMax"
  | "sessionsPerUserMax"
  | "requestsInFlightPerSessionMax"
  | "requestsInFlightMax"
  | "overloadedRetryAfterMs"
  | "sendBufferBytesMax"
  | "heldEventsPerSessionMax"
  | "heldBytesPerSessionMax"
  | "conversationsPerSessionMax"
  | "conversationReadsPerSessionMax"
  | "typingIntervalMs"
  | "typingConversationsPerSessionMax"
  | "rateLimits"
  | "sendOrderHoldMs"
>;

/** Typing and presence: ephemeral, never stored. */
export type EphemeralServices = {
  readonly typing: TypingService;
  readonly presence: PresenceSource;
  /** Whose presence a session may watch (EDGE_PRESENCE_POLICY); asked once per watchPresence. */
  readonly presenceAccess: PresenceAccess;
  /** Monotonic milliseconds, for the typing rate limit. */
  readonly monotonicNowMs: () => number;
};

/** Token lifetime: the wall clock that exp and iat are read against, and the revocations held. */
export type TokenLifetime = {
  /** Wall-clock ms since the epoch (tokens carry wall-clock times). */
  readonly wallNowMs: () => number;
  readonly revocations: RevocationList;
};

/** The edge as its sessions see it; `S` is the session type (EdgeCore implements SessionHost<Session>). */
export interface SessionHost<S> {
  readonly limits: EdgeLimits;
  readonly verifier: TokenVerifier;
  readonly handler: RequestHandler;
  readonly deliveries: DeliverySource;
  readonly logger: ServiceLogger;
  readonly ephemeral: EphemeralServices;
  readonly conversationReads: ConcurrencyLimiter;
  readonly tokenLifetime: TokenLifetime;
  readonly metrics: SessionMetrics;
  readonly traceIds: TraceIds;
  /** Requests of all sessions being served: each session counts its own in and out. */
  requestsInFlight: number;
  /** Hellos refused with too_many_sessions since start. */
  tooManySessionsRefusals: number;
  userRateLimits(userId: string): UserRateLimits;
  /** The session was welcomed. */
  sessionOpened(session: S, userId: string): void;
  /** The session closed; `userId` is its user's once it was welcomed. */
  forget(session: S, userId: string | undefined): void;
  watchPresence(session: S, frame: WatchPresenceFrame): Promise<ServerFrame>;
  isRevoked(identity: Identity): boolean;
  /** Closes the user's session that has been silent longest, if one has gone silent; whether it did. */
  closeSilentSessionOf(userId: string): boolean;
}
