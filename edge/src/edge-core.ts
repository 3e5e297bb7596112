// The edge without its socket server: its sessions (session.ts), authentication, limits and request
// dispatch. uWS wiring (edge-server.ts) only moves bytes in and out, so the whole session logic is testable
// in process.
import { closeCodes, type DirectoryEntry, type PresenceFrame, type WatchPresenceFrame, type ServerFrame } from "@cellwire/protocol";
import type { ConcurrencyLimiter, ServiceLogger } from "@cellwire/cluster";
import type { TokenVerifier } from "./auth/token-verifier.ts";
import type { DeliverySource } from "./delivery-hub.ts";
import type { RequestHandler } from "./request-handler.ts";
import type { PresenceAccess } from "./presence/presence-access.ts";
import type { PresenceSource } from "./presence/presence-hub.ts";
import type { PresenceChange } from "./presence/presence-table.ts";
import { PresenceWatches } from "./presence/presence-watches.ts";
import { Session } from "./session.ts";
import type { TypingService } from "./typing/typing-relay.ts";

export { Session } from "./session.ts";

export type SendOutcome = "sent" | "backpressure" | "dropped";

/** What the core needs of a socket. MUST NOT be called after the socket reported its close. */
export interface SessionTransport {
  send(text: string): SendOutcome;
  bufferedBytes(): number;
  close(code: number, reason: string): void;
}

export type EdgeLimits = {
  readonly authTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly sessionsMax: number;
  readonly sessionsPerUserMax: number;
  readonly requestsInFlightPerSessionMax: number;
  /** Requests in flight across the edge; past it a request is answered `overloaded` at once. */
  readonly requestsInFlightMax: number;
  /** The retry-after of the edge's own `overloaded` answers. */
  readonly overloadedRetryAfterMs: number;
  readonly sendBufferBytesMax: number;
  /**
   * Live events a session holds while it reads its backlog (and live messages per conversation while it
   * reads that conversation's log); past it they are read from the mailbox (or the log).
   */
  readonly heldEventsPerSessionMax: number;
  /**
   * Conversations one session keeps a cursor for; past it the least recently used one that is not being
   * read is forgotten (a later message of it is read from the member's join point again in a resumed
   * session, and the device drops what it already holds by seq).
   */
  readonly conversationsPerSessionMax: number;
  /** Reads of conversation logs one session runs at once (during a resume with many conversations). */
  readonly conversationReadsPerSessionMax: number;
  /** A session's typing frames for one conversation are at least this far apart; closer ones: rate_limited. */
  readonly typingIntervalMs: number;
  /** Conversations one session may type in within one typingIntervalMs; past it: rate_limited. */
  readonly typingConversationsPerSessionMax: number;
};

/** Typing and presence: ephemeral, never stored. */
export type EphemeralServices = {
  readonly typing: TypingService;
  readonly presence: PresenceSource;
  /** Whose presence a session may watch (EDGE_PRESENCE_POLICY); asked once per watchPresence. */
  readonly presenceAccess: PresenceAccess;
  /** Monotonic milliseconds, for the typing rate limit. */
  readonly monotonicNowMs: () => number;
};

export class EdgeCore {
  /** Requests of all sessions being served (the sessions count them; EdgeLimits.requestsInFlightMax bounds them). */
  requestsInFlight = 0;
  private readonly sessions = new Set<Session>();
  /** Welcomed sessions by user, for the moves of a user's mailbox. */
  private readonly sessionsByUser = new Map<string, Session | Set<Session>>();
  private readonly watches = new PresenceWatches<Session>();
  /** Each session's latest watchPresence: an older one whose access check ends later must not win. */
  private readonly watchGenerations = new WeakMap<Session, number>();
  private accepting = true;

  constructor(
    readonly limits: EdgeLimits,
    readonly verifier: TokenVerifier,
    readonly handler: RequestHandler,
    readonly deliveries: DeliverySource,
    readonly logger: ServiceLogger,
    readonly ephemeral: EphemeralServices,
    /** Bounds the reads of conversation logs in flight across the edge (a wave of resumes). */
    readonly conversationReads: ConcurrencyLimiter,
  ) {
    ephemeral.presence.onChange((change) => this.presenceChanged(change));
  }

  /** Users watched by at least one session of this edge. */
  get watchedUserCount(): number {
    return this.watches.watchedUserCount;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Returns undefined (and closes the transport) when the edge is full or stopping. */
  openSession(transport: SessionTransport): Session | undefined {
    if (!this.accepting) {
      transport.close(closeCodes.going_away.code, "the edge is shutting down");
      return undefined;
    }
    if (this.sessions.size >= this.limits.sessionsMax) {
      transport.close(closeCodes.going_away.code, "this edge is full; try another");
      return undefined;
    }
    const session = new Session(this, transport);
    this.sessions.add(session);
    return session;
  }

  /** The session was welcomed. */
  sessionOpened(session: Session, userId: string): void {
    // A user's only session is kept as itself, a Set from the second on: most users have one device online.
    const sessions = this.sessionsByUser.get(userId);
    if (sessions === undefined) this.sessionsByUser.set(userId, session);
    else if (sessions instanceof Set) sessions.add(session);
    else if (sessions !== session) this.sessionsByUser.set(userId, new Set([sessions, session]));
  }

  /** The session closed; `userId` is set when it had been welcomed. */
  forget(session: Session, userId: string | undefined): void {
    this.sessions.delete(session);
    if (userId === undefined) return;
    const userSessions = this.sessionsByUser.get(userId);
    if (userSessions === session) this.sessionsByUser.delete(userId);
    else if (userSessions instanceof Set) {
      userSessions.delete(session);
      if (userSessions.size === 0) this.sessionsByUser.delete(userId);
    }
    this.deliveries.detach(userId, session);
    this.watches.remove(session);
    this.ephemeral.presence.sessionClosed(userId);
  }

  /**
   * Replaces what the session watches, then reads the states: a change after the replacement reaches the
   * session as a `presence` frame, and the snapshot, read last, is never older than one sent before it.
   * A user the session may not see (presenceAccess) is not watched and reads as a user who never came
   * online, so the answer does not tell a forbidden user from an unknown one.
   */
  async watchPresence(session: Session, frame: WatchPresenceFrame): Promise<ServerFrame> {
    const generation = (this.watchGenerations.get(session) ?? 0) + 1;
    this.watchGenerations.set(session, generation);
    const watcherUserId = session.userId;
    const visible = watcherUserId === undefined ? new Set<string>() : await this.ephemeral.presenceAccess.visible(watcherUserId, frame.userIds);
    const watched = frame.userIds.filter((userId) => visible.has(userId));
    if (this.watchGenerations.get(session) === generation && session.userId !== undefined) this.watches.replace(session, watched);
    const states = new Map((await this.ephemeral.presence.states(watched)).map((state) => [state.userId, state]));
    const users = frame.userIds.map((userId) => states.get(userId) ?? { userId, status: "offline" as const, changedAtMs: null });
    return { type: "presenceSnapshot", requestId: frame.requestId, users };
  }

  private presenceChanged(change: PresenceChange): void {
    const watchers = this.watches.watchersOf(change.userId);
    if (watchers.length === 0) return;
    const frame: PresenceFrame = { type: "presence", userId: change.userId, status: change.status, changedAtMs: change.changedAtMs };
    const text = JSON.stringify(frame);
    for (const session of watchers) session.deliverPresence(text);
  }

  /**
   * The workers of a cell changed: sessions homed there read their mailbox again, so an event whose live
   * delivery died with a worker is not missed until the next event shows the gap.
   */
  cellMembershipChanged(cellId: string): void {
    for (const session of this.sessions) {
      if (session.homeCellId === cellId) session.catchUp();
      session.catchUpConversationsIn(cellId);
    }
  }

  /**
   * The directory moved an entry (directory.changed): a cached home older than it is replaced, and the
   * sessions of a user whose mailbox moved follow it and read the mailbox from the new home.
   */
  directoryChanged(entry: DirectoryEntry): void {
    this.handler.directoryChanged(entry);
    if (entry.kind !== "user") return;
    const sessions = this.sessionsByUser.get(entry.id);
    const moved = sessions === undefined ? [] : sessions instanceof Set ? [...sessions] : [sessions];
    for (const session of moved) session.homeMoved({ cellId: entry.cellId, epoch: entry.epoch });
  }

  /**
   * The edge's NATS connection came back (perhaps to another server): live events published while it
   * was away never reach it, so every session reads its mailbox again from its cursor.
   */
  catchUpAll(): void {
    for (const session of this.sessions) session.catchUpEverything();
  }

  /** Closes every session with going_away; new sessions are refused from now on. */
  closeAll(): void {
    this.accepting = false;
    for (const session of [...this.sessions]) session.close("going_away", "the edge is shutting down");
  }
}
