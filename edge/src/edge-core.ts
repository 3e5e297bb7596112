// The edge without its socket server: its sessions (session.ts), authentication, limits and request
// dispatch. uWS wiring (edge-server.ts) only moves bytes in and out, so the whole session logic is testable
// in process.
import { closeCodes, type DirectoryEntry, type PresenceFrame, type WatchPresenceFrame, type ServerFrame } from "@cellwire/protocol";
import { TraceIds, type ConcurrencyLimiter, type ServiceLogger } from "@cellwire/cluster";
import type { Identity, TokenVerifier } from "./auth/token-verifier.ts";
import type { CatchUpPacer } from "./catch-up-pacer.ts";
import type { DeliverySource } from "./delivery-hub.ts";
import type { RequestHandler } from "./request-handler.ts";
import type { PresenceChange } from "./presence/presence-table.ts";
import { PresenceWatches } from "./presence/presence-watches.ts";
import { EdgeDrain, type DrainClock, type DrainOptions, type DrainOutcome } from "./edge-drain.ts";
import { noSessionMetrics, type SessionCounts, type SessionMetrics } from "./edge-metrics.ts";
import { Session } from "./session.ts";
import type { EdgeLimits, EphemeralServices, SendOutcome, SessionHost, SessionTransport, TokenLifetime } from "./session-host.ts";
import { assertRateLimitSettings, UserRateLimits } from "./rate-limit/request-rate-limits.ts";

export { Session };
export type { EdgeLimits, EphemeralServices, SendOutcome, SessionHost, SessionTransport, TokenLifetime };

export class EdgeCore implements SessionHost<Session> {
  /** Requests of all sessions being served (the sessions count them; EdgeLimits.requestsInFlightMax bounds them). */
  requestsInFlight = 0;
  /** Hellos refused with too_many_sessions since start (reported by /healthz). */
  tooManySessionsRefusals = 0;
  private readonly sessions = new Set<Session>();
  /** Sessions welcomed and not yet closed; the others are still authenticating (the admission budget). */
  private welcomedSessionCount = 0;
  /** Welcomed sessions by user, for the moves of a user's mailbox. */
  private readonly sessionsByUser = new Map<string, Session | Set<Session>>();
  private readonly watches = new PresenceWatches<Session>();
  /** Each session's latest watchPresence: an older one whose access check ends later must not win. */
  private readonly watchGenerations = new WeakMap<Session, number>();
  private accepting = true;
  /** Set while the edge drains: told of every session that closes. */
  private drain: EdgeDrain<Session> | undefined;

  constructor(
    readonly limits: EdgeLimits,
    readonly verifier: TokenVerifier,
    readonly handler: RequestHandler,
    readonly deliveries: DeliverySource,
    readonly logger: ServiceLogger,
    readonly ephemeral: EphemeralServices,
    /** Bounds the reads of conversation logs in flight across the edge (a wave of resumes). */
    readonly conversationReads: ConcurrencyLimiter,
    readonly tokenLifetime: TokenLifetime,
    /** Spreads and bounds the sessions' catch-ups after a ring change or a NATS reconnect. */
    readonly catchUps: CatchUpPacer<Session>,
    /** What the sessions count (frames, sends, acks, latencies); nothing by default. */
    readonly metrics: SessionMetrics = noSessionMetrics,
    /**
     * With tracing off, the trace context of each request sent to a cell (docs/decisions/0037); a test
     * passes one with a fixed prefix.
     */
    readonly traceIds: TraceIds = new TraceIds(),
  ) {
    assertRateLimitSettings(limits.rateLimits);
    ephemeral.presence.onChange((change) => this.presenceChanged(change));
  }

  /** Users watched by at least one session of this edge. */
  get watchedUserCount(): number {
    return this.watches.watchedUserCount;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Sessions that have not been welcomed: waiting for a hello, or being verified. */
  get unauthenticatedSessionCount(): number {
    return this.sessions.size - this.welcomedSessionCount;
  }

  /** Whether new sessions are accepted: false from the start of a drain (or closeAll) on. */
  get isAccepting(): boolean {
    return this.accepting;
  }

  /** The sessions by state, for the sessions gauge: a draining edge's welcomed sessions count as draining. */
  sessionCounts(): SessionCounts {
    const welcomed = this.welcomedSessionCount;
    const awaitingHello = this.sessions.size - welcomed;
    return this.accepting ? { awaitingHello, welcomed, draining: 0 } : { awaitingHello, welcomed: 0, draining: welcomed };
  }

  /** Returns undefined (and closes the transport) when the edge is full or stopping. */
  openSession(transport: SessionTransport): Session | undefined {
    this.metrics.connectionOpened();
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

  /**
   * The user's rate limits on this edge, for a welcomed session of the user about to use them: those of
   * another session of the user here when one has them, else new ones. They live as long as a session
   * holding them does, in no map of their own. Called once per session (at most sessionsPerUserMax looked at).
   */
  userRateLimits(userId: string): UserRateLimits {
    const sessions = this.sessionsByUser.get(userId);
    if (sessions instanceof Set) {
      for (const session of sessions) if (session.userRateLimits !== undefined) return session.userRateLimits;
    } else if (sessions?.userRateLimits !== undefined) return sessions.userRateLimits;
    return new UserRateLimits(this.limits.rateLimits);
  }

  /** The session was welcomed. */
  sessionOpened(session: Session, userId: string): void {
    this.welcomedSessionCount++;
    // A user's only session is kept as itself, a Set from the second on: most users have one device online.
    const sessions = this.sessionsByUser.get(userId);
    if (sessions === undefined) this.sessionsByUser.set(userId, session);
    else if (sessions instanceof Set) sessions.add(session);
    else if (sessions !== session) this.sessionsByUser.set(userId, new Set([sessions, session]));
  }

  /**
   * Closes with 4004 (stale_session) the user's session here heard from least recently, if it has been
   * silent for more than two heartbeat intervals: a client pings every interval, so such a session is a
   * socket whose close never reached the edge (a dead network path, a device that slept), and it must not
   * keep the user's live devices out (docs/decisions/0018). Returns whether it closed one. At most
   * sessionsPerUserMax sessions looked at, only when the user is at the limit.
   */
  closeSilentSessionOf(userId: string): boolean {
    const sessions = this.sessionsByUser.get(userId);
    if (sessions === undefined) return false;
    let silentest: Session | undefined;
    for (const session of sessions instanceof Set ? sessions : [sessions]) {
      if (silentest === undefined || session.lastHeardAtMs < silentest.lastHeardAtMs) silentest = session;
    }
    if (silentest === undefined) return false;
    const silentMs = this.ephemeral.monotonicNowMs() - silentest.lastHeardAtMs;
    if (silentMs <= 2 * this.limits.heartbeatIntervalMs) return false;
    silentest.close("stale_session", `silent for ${Math.round(silentMs)} ms while its user opened another session`);
    return true;
  }

  /** The session closed; `userId` is set when it had been welcomed. */
  forget(session: Session, userId: string | undefined): void {
    this.sessions.delete(session);
    this.drain?.closed(session);
    this.catchUps.forget(session);
    if (userId === undefined) return;
    this.welcomedSessionCount--;
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
    const visible =
      watcherUserId === undefined ? new Set<string>() : await this.ephemeral.presenceAccess.visible(watcherUserId, frame.userIds);
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
   * The workers of a cell changed: sessions homed there read their mailbox again, and sessions following
   * a conversation cached as homed there read its log again, so an item whose live delivery died with a
   * worker is not missed until the next one shows the gap. Each at its own moment of the catch-up window,
   * bounded across the edge (catch-up-pacer.ts): not all in this turn.
   */
  cellMembershipChanged(cellId: string): void {
    const concerned: Session[] = [];
    for (const session of this.sessions) if (session.isConcernedBy(cellId)) concerned.push(session);
    this.catchUps.request(concerned, cellId);
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
   * was away never reach it, so every session reads its mailbox and conversations again from its cursors,
   * each at its own moment of the catch-up window (catch-up-pacer.ts).
   */
  catchUpAll(): void {
    const open: Session[] = [];
    for (const session of this.sessions) if (session.isOpen) open.push(session);
    this.catchUps.request(open, undefined);
  }

  /**
   * The edge is stopping: new sessions are refused from now on, and the open ones are closed with
   * going_away spread over options.drainMs, each once its requests are answered (edge-drain.ts).
   * Resolves when every session has closed, at the latest options.graceMs after the window.
   */
  async drainSessions(options: DrainOptions, clock: DrainClock): Promise<DrainOutcome> {
    this.accepting = false;
    if (this.drain !== undefined) throw new Error("the edge is already draining");
    const drain = new EdgeDrain<Session>(options, clock);
    this.drain = drain;
    return drain.run([...this.sessions]);
  }

  /** Whether a verified token is refused because its user's sessions were revoked after it was issued. */
  isRevoked(identity: Identity): boolean {
    return this.tokenLifetime.revocations.refuses(identity.userId, identity.issuedAtMs, this.tokenLifetime.wallNowMs());
  }

  /**
   * Closes with 4101 every session whose token expired (tokenExpiresAtMs, moved by `refresh`). Called
   * once a second by the edge rather than a timer per session: a pass over 10,000 sessions compares
   * 10,000 numbers (measured at about 150 µs on the shared 2-core dev host: 0.015% of a core), while a
   * timer per session would cost a Timeout object each (arming 10,000 took 60 ms there, cold) and a
   * re-arm on every refresh, for sessions that mostly never expire while connected. Expiry is therefore
   * enforced up to one sweep late. Returns how many it closed.
   */
  closeExpiredSessions(): number {
    const nowMs = this.tokenLifetime.wallNowMs();
    let expired: Session[] | undefined;
    for (const session of this.sessions) if (session.tokenExpiresAtMs <= nowMs) (expired ??= []).push(session);
    for (const session of expired ?? []) session.close("token_expired", "the token expired; refresh it or reconnect with a new one");
    return expired?.length ?? 0;
  }

  /**
   * An operator revoked `userId`'s sessions (session.revoke): this edge refuses the user's tokens issued
   * up to `revokedAtMs` for the retention, and closes the user's open sessions with 4103. A session still
   * authenticating checks the revocations again just before its welcome.
   */
  revoke(userId: string, revokedAtMs: number): number {
    const forgotten = this.tokenLifetime.revocations.revoke(userId, revokedAtMs, this.tokenLifetime.wallNowMs());
    if (forgotten !== undefined) this.logger.warn(`revocations are full: the revocation of ${forgotten} is forgotten`);
    const sessions = this.sessionsByUser.get(userId);
    const revoked = sessions === undefined ? [] : sessions instanceof Set ? [...sessions] : [sessions];
    for (const session of revoked) session.close("token_revoked", "the user's sessions were revoked");
    return revoked.length;
  }

  /** Closes every session with going_away; new sessions are refused from now on. */
  closeAll(): void {
    this.accepting = false;
    for (const session of [...this.sessions]) session.close("going_away", "the edge is shutting down");
  }
}
