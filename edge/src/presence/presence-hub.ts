// Presence over NATS: every edge publishes claims on its online users to the presence subject and
// subscribes to everyone's, so each edge holds the whole online set (PresenceTable) and answers
// watchPresence locally. Timing, with the defaults:
// - a user's first session here claims the user, the last one's close ends the claim, within the turn of
//   the event loop: the users who came online in one turn are claimed together in presence.heartbeat
//   messages (a heartbeat claims exactly as presence.change online does), those who went offline each
//   in a presence.change offline. A wave of connects (an edge's clients failing over here) then costs
//   a publish per turn, not one per user, here, in NATS and in every other edge's decoder;
// - every heartbeatIntervalMs (5 s) the edge re-claims all its online users (presence.heartbeat, in
//   messages of at most presenceHeartbeatUsersMax users), each claim standing for claimTtlMs (15 s);
// - every expiryCheckIntervalMs (claimTtlMs / 8) each edge drops lapsed claims: the users of an edge
//   that died without a goodbye go offline everywhere within claimTtlMs + expiryCheckIntervalMs of its
//   last heartbeat (16.9 s by default);
// - a stopping edge publishes presence.goodbye, which ends its claims at once.
// Cost: every edge receives every edge's heartbeats, (online users / heartbeatIntervalMs) user ids per
// second, and holds up to remoteClaimsMax claims; past that presence needs sharding (docs/architecture.md).
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { decodeMessage, encodeJson, type ServiceLogger } from "@cellwire/cluster";
import { presenceHeartbeatUsersMax, presenceMessage, presenceSubject, type PresenceMessage, type PresenceState } from "@cellwire/protocol";
import { PresenceTable, type PresenceChange, type PresenceClock } from "./presence-table.ts";

export interface PresenceSource {
  /** A session of the user was welcomed on this edge. */
  sessionOpened(userId: string): void;
  /** A welcomed session of the user closed. */
  sessionClosed(userId: string): void;
  /**
   * The state of each user, in the order given. Right after the edge started this waits (once, at most
   * warmUpMs) until it has heard a heartbeat of every other edge, so that it does not report users
   * online elsewhere as offline.
   */
  states(userIds: readonly string[]): Promise<PresenceState[]>;
  /** Called with every change of a user's aggregated status, whichever edge caused it. */
  onChange(listener: (change: PresenceChange) => void): () => void;
}

export type PresenceHubOptions = {
  readonly namespace: string;
  /** Unique per process run (edge id plus random), so a restarted edge does not inherit old claims. */
  readonly edgeInstanceId: string;
  readonly heartbeatIntervalMs: number;
  /** How long each claim of this edge stands without a newer message; at least two heartbeats. */
  readonly claimTtlMs: number;
  readonly remoteClaimsMax: number;
  readonly offlineUsersRememberedMax: number;
};

/** How often lapsed claims are dropped: a fraction of the claim TTL, so expiry is late by at most that. */
export function expiryCheckIntervalMs(claimTtlMs: number): number {
  return Math.max(25, Math.floor(claimTtlMs / 8));
}

/** The worst delay between an edge's death and its users reading offline on another edge. */
export function presenceExpiryBoundMs(claimTtlMs: number): number {
  return claimTtlMs + expiryCheckIntervalMs(claimTtlMs);
}

export class NatsPresenceHub implements PresenceSource {
  private readonly table: PresenceTable;
  private readonly listeners = new Set<(change: PresenceChange) => void>();
  private subscription: Subscription | undefined;
  private readonly intervals: ReturnType<typeof setInterval>[] = [];
  private warmUpTimer: ReturnType<typeof setTimeout> | undefined;
  private warm: Promise<void> = Promise.resolve();
  private endWarmUp: () => void = () => {};
  private stopped = false;
  private ignoredClaimsReported = 0;
  /** Claims of this edge that changed in this turn: user → its latest status, published at its end. */
  private readonly pendingClaims = new Map<string, "online" | "offline">();
  private claimsFlushScheduled = false;

  constructor(
    private readonly connection: NatsConnection,
    private readonly options: PresenceHubOptions,
    clock: PresenceClock,
    private readonly logger: ServiceLogger,
  ) {
    if (options.claimTtlMs < 2 * options.heartbeatIntervalMs)
      throw new RangeError("claimTtlMs must cover at least two heartbeat intervals");
    this.table = new PresenceTable(
      {
        localEdgeInstanceId: options.edgeInstanceId,
        remoteClaimsMax: options.remoteClaimsMax,
        offlineUsersRememberedMax: options.offlineUsersRememberedMax,
      },
      clock,
    );
  }

  /** Subscribes (confirmed by a flush) and starts the heartbeat and expiry timers. */
  async start(): Promise<void> {
    this.subscription = this.connection.subscribe(presenceSubject(this.options.namespace), {
      callback: (error, received) => {
        if (error !== null) {
          this.logger.warn(`presence subscription failed: ${error.message}`);
          return;
        }
        const decoded = decodeMessage(presenceMessage, received.data);
        if (!decoded.ok) {
          this.logger.warn(`dropping undecodable presence message: ${decoded.reason}`);
          return;
        }
        this.emit(this.table.apply(decoded.value));
      },
    });
    await this.connection.flush();
    // Other edges' heartbeats reach this edge within one interval (all edges share the setting).
    this.warm = new Promise((resolve) => {
      this.endWarmUp = resolve;
      this.warmUpTimer = setTimeout(resolve, Math.ceil(this.options.heartbeatIntervalMs * 1.25));
    });
    this.intervals.push(setInterval(() => this.heartbeat(), this.options.heartbeatIntervalMs));
    this.intervals.push(setInterval(() => this.emit(this.table.expire()), expiryCheckIntervalMs(this.options.claimTtlMs)));
  }

  /** Publishes goodbye (every claim of this edge ends now) and stops; later session changes publish nothing. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const interval of this.intervals.splice(0)) clearInterval(interval);
    clearTimeout(this.warmUpTimer);
    this.endWarmUp();
    this.publish({ type: "presence.goodbye", edgeInstanceId: this.options.edgeInstanceId });
    this.subscription?.unsubscribe();
  }

  sessionOpened(userId: string): void {
    const outcome = this.table.localSessionOpened(userId);
    if (outcome.claimChanged) this.claimChanged(userId, "online");
    this.emit(outcome.changes);
  }

  sessionClosed(userId: string): void {
    const outcome = this.table.localSessionClosed(userId);
    if (outcome.claimChanged) this.claimChanged(userId, "offline");
    this.emit(outcome.changes);
  }

  async states(userIds: readonly string[]): Promise<PresenceState[]> {
    await this.warm;
    return userIds.map((userId) => this.table.stateOf(userId));
  }

  onChange(listener: (change: PresenceChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private heartbeat(): void {
    const userIds = this.table.localUserIds();
    for (let start = 0; start < userIds.length; start += presenceHeartbeatUsersMax) {
      this.publish({
        type: "presence.heartbeat",
        edgeInstanceId: this.options.edgeInstanceId,
        claimTtlMs: this.options.claimTtlMs,
        userIds: userIds.slice(start, start + presenceHeartbeatUsersMax),
      });
    }
    const ignored = this.table.ignoredClaimCount;
    if (ignored > this.ignoredClaimsReported) {
      this.logger.warn(
        `${ignored - this.ignoredClaimsReported} presence claims ignored: EDGE_PRESENCE_REMOTE_CLAIMS_MAX (${this.options.remoteClaimsMax}) reached; those users read offline here`,
      );
      this.ignoredClaimsReported = ignored;
    }
  }

  /**
   * Queues the claim's new status for the end of this turn. Only the latest status of a user is sent:
   * each message sets the sender's claim on the user, so the last one is all a receiver keeps.
   */
  private claimChanged(userId: string, status: "online" | "offline"): void {
    if (this.stopped) return;
    this.pendingClaims.set(userId, status);
    if (this.claimsFlushScheduled) return;
    this.claimsFlushScheduled = true;
    setImmediate(() => this.publishPendingClaims());
  }

  private publishPendingClaims(): void {
    this.claimsFlushScheduled = false;
    const online: string[] = [];
    for (const [userId, status] of this.pendingClaims) {
      if (status === "online") online.push(userId);
      else
        this.publish({
          type: "presence.change",
          edgeInstanceId: this.options.edgeInstanceId,
          claimTtlMs: this.options.claimTtlMs,
          userId,
          status,
        });
    }
    this.pendingClaims.clear();
    for (let start = 0; start < online.length; start += presenceHeartbeatUsersMax) {
      this.publish({
        type: "presence.heartbeat",
        edgeInstanceId: this.options.edgeInstanceId,
        claimTtlMs: this.options.claimTtlMs,
        userIds: online.slice(start, start + presenceHeartbeatUsersMax),
      });
    }
  }

  private publish(message: PresenceMessage): void {
    if (this.stopped && message.type !== "presence.goodbye") return;
    try {
      this.connection.publish(presenceSubject(this.options.namespace), encodeJson(message));
    } catch (error) {
      // A closed connection: the next heartbeat after a reconnect re-claims; watchers expire what lapses.
      this.logger.warn(`presence publish failed: ${String(error)}`);
    }
  }

  private emit(changes: readonly PresenceChange[]): void {
    for (const change of changes) for (const listener of this.listeners) listener(change);
  }
}
