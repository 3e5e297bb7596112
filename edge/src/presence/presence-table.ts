// An edge's view of who is online anywhere: this edge's own open sessions, counted per user, and the
// claims other edges publish (presence.heartbeat / presence.change / presence.goodbye). A user is online
// while this edge holds a session of theirs or at least one other edge's claim stands. A claim stands for
// the claimTtlMs its edge announced, from the last message that made it, by this edge's monotonic clock:
// an edge that dies without a goodbye stops heartbeating and its claims lapse at the next expire() after
// that (NATS 2.9 has no per-key TTL, so expiry is the watcher's job, as for worker leases).
//
// Pure: the clock is injected and nothing here does I/O or sets a timer; presence-hub.ts does both.
import { OldestFirst } from "@cellwire/cluster";
import type { PresenceMessage, PresenceState, PresenceStatus } from "@cellwire/protocol";

export type PresenceClock = {
  /** For claim expiry: never jumps. */
  readonly monotonicNowMs: () => number;
  /** For changedAtMs on the wire (ms since the epoch). */
  readonly wallNowMs: () => number;
};

/** A user's aggregated status changed, as this edge saw it at changedAtMs (wall clock). */
export type PresenceChange = { readonly userId: string; readonly status: PresenceStatus; readonly changedAtMs: number };

export type PresenceTableOptions = {
  /** Messages from this edge instance (NATS echoes them) are ignored: its own sessions are counted directly. */
  readonly localEdgeInstanceId: string;
  /** Claims of other edges held at once; past it new ones are ignored and counted in ignoredClaimCount. */
  readonly remoteClaimsMax: number;
  /** Offline users whose change time is remembered for changedAtMs; the least recently changed go first. */
  readonly offlineUsersRememberedMax: number;
};

export type LocalClaimOutcome = {
  /** This edge's claim on the user started (first session) or ended (last session): announce it. */
  readonly claimChanged: boolean;
  readonly changes: PresenceChange[];
};

/** One other edge's claim on a user: a user is nearly always claimed by one edge, and needs no Map then. */
class SoleClaim {
  constructor(
    readonly edgeInstanceId: string,
    /** The monotonic time the claim lapses at. */
    public lapsesAtMs: number,
  ) {}
}

/**
 * The claims on one user: one edge's (a SoleClaim), or several, edgeInstanceId → lapse time. A Map per
 * user cost each edge about 260 bytes for every user online elsewhere.
 */
type UserClaims = SoleClaim | Map<string, number>;

export class PresenceTable {
  private readonly localSessions = new Map<string, number>();
  /** userId → the other edges' claims on the user; never an empty Map. */
  private readonly remoteClaims = new Map<string, UserClaims>();
  /** edgeInstanceId → the users it claims, so a goodbye drops them without scanning every user. */
  private readonly claimsByEdge = new Map<string, Set<string>>();
  private remoteClaimTotal = 0;
  private ignoredClaims = 0;
  /** Online users → when they came online (wall clock). */
  private readonly onlineSinceMs = new Map<string, number>();
  /** Recently offline users → when they went offline (wall clock); Map order is change order. */
  private readonly offlineSinceMs = new Map<string, number>();
  private readonly oldestOffline = new OldestFirst(this.offlineSinceMs);

  constructor(
    private readonly options: PresenceTableOptions,
    private readonly clock: PresenceClock,
  ) {}

  get remoteClaimCount(): number {
    return this.remoteClaimTotal;
  }

  /** Claims refused because remoteClaimsMax was reached, since the table was made. */
  get ignoredClaimCount(): number {
    return this.ignoredClaims;
  }

  /** Users with at least one session on this edge, for heartbeats. */
  localUserIds(): string[] {
    return [...this.localSessions.keys()];
  }

  localSessionOpened(userId: string): LocalClaimOutcome {
    const before = this.isOnline(userId);
    const count = this.localSessions.get(userId) ?? 0;
    this.localSessions.set(userId, count + 1);
    return { claimChanged: count === 0, changes: this.changeOf(userId, before) };
  }

  localSessionClosed(userId: string): LocalClaimOutcome {
    const count = this.localSessions.get(userId);
    if (count === undefined) return { claimChanged: false, changes: [] };
    const before = this.isOnline(userId);
    if (count > 1) {
      this.localSessions.set(userId, count - 1);
      return { claimChanged: false, changes: [] };
    }
    this.localSessions.delete(userId);
    return { claimChanged: true, changes: this.changeOf(userId, before) };
  }

  /** Applies a message from another edge; returns the users whose status changed. */
  apply(message: PresenceMessage): PresenceChange[] {
    if (message.edgeInstanceId === this.options.localEdgeInstanceId) return [];
    const changes: PresenceChange[] = [];
    switch (message.type) {
      case "presence.heartbeat": {
        const lapsesAtMs = this.clock.monotonicNowMs() + message.claimTtlMs;
        for (const userId of message.userIds) this.claim(message.edgeInstanceId, userId, lapsesAtMs, changes);
        return changes;
      }
      case "presence.change":
        if (message.status === "online")
          this.claim(message.edgeInstanceId, message.userId, this.clock.monotonicNowMs() + message.claimTtlMs, changes);
        else this.unclaim(message.edgeInstanceId, message.userId, changes);
        return changes;
      case "presence.goodbye":
        for (const userId of [...(this.claimsByEdge.get(message.edgeInstanceId) ?? [])])
          this.unclaim(message.edgeInstanceId, userId, changes);
        return changes;
    }
  }

  /** Drops every claim whose time is up; returns the users who went offline. */
  expire(): PresenceChange[] {
    const nowMs = this.clock.monotonicNowMs();
    const changes: PresenceChange[] = [];
    // Deleting the entry being visited is safe while iterating a Map; a user's claims are copied only
    // when several edges claim them.
    for (const [userId, claims] of this.remoteClaims) {
      if (claims instanceof SoleClaim) {
        if (nowMs >= claims.lapsesAtMs) this.unclaim(claims.edgeInstanceId, userId, changes);
        continue;
      }
      for (const [edgeInstanceId, lapsesAtMs] of [...claims]) {
        if (nowMs >= lapsesAtMs) this.unclaim(edgeInstanceId, userId, changes);
      }
    }
    return changes;
  }

  stateOf(userId: string): PresenceState {
    if (this.isOnline(userId)) return { userId, status: "online", changedAtMs: this.onlineSinceMs.get(userId) ?? null };
    return { userId, status: "offline", changedAtMs: this.offlineSinceMs.get(userId) ?? null };
  }

  isOnline(userId: string): boolean {
    return this.localSessions.has(userId) || this.remoteClaims.has(userId);
  }

  private claim(edgeInstanceId: string, userId: string, lapsesAtMs: number, changes: PresenceChange[]): void {
    const claims = this.remoteClaims.get(userId);
    if (claims instanceof SoleClaim && claims.edgeInstanceId === edgeInstanceId) {
      claims.lapsesAtMs = lapsesAtMs;
      return;
    }
    if (claims instanceof Map && claims.has(edgeInstanceId)) {
      claims.set(edgeInstanceId, lapsesAtMs);
      return;
    }
    if (this.remoteClaimTotal >= this.options.remoteClaimsMax) {
      this.ignoredClaims++;
      return;
    }
    const before = this.isOnline(userId);
    if (claims === undefined) this.remoteClaims.set(userId, new SoleClaim(edgeInstanceId, lapsesAtMs));
    else if (claims instanceof SoleClaim) {
      this.remoteClaims.set(
        userId,
        new Map([
          [claims.edgeInstanceId, claims.lapsesAtMs],
          [edgeInstanceId, lapsesAtMs],
        ]),
      );
    } else claims.set(edgeInstanceId, lapsesAtMs);
    let users = this.claimsByEdge.get(edgeInstanceId);
    if (users === undefined) {
      users = new Set();
      this.claimsByEdge.set(edgeInstanceId, users);
    }
    users.add(userId);
    this.remoteClaimTotal++;
    changes.push(...this.changeOf(userId, before));
  }

  private unclaim(edgeInstanceId: string, userId: string, changes: PresenceChange[]): void {
    const claims = this.remoteClaims.get(userId);
    if (claims === undefined) return;
    if (claims instanceof SoleClaim ? claims.edgeInstanceId !== edgeInstanceId : !claims.has(edgeInstanceId)) return;
    const before = this.isOnline(userId);
    if (claims instanceof SoleClaim) this.remoteClaims.delete(userId);
    else {
      claims.delete(edgeInstanceId);
      if (claims.size === 1)
        for (const [remainingEdge, remainingLapsesAtMs] of claims)
          this.remoteClaims.set(userId, new SoleClaim(remainingEdge, remainingLapsesAtMs));
    }
    const users = this.claimsByEdge.get(edgeInstanceId);
    users?.delete(userId);
    if (users?.size === 0) this.claimsByEdge.delete(edgeInstanceId);
    this.remoteClaimTotal--;
    changes.push(...this.changeOf(userId, before));
  }

  /** The change to report after a mutation, if the user's aggregated status flipped. */
  private changeOf(userId: string, wasOnline: boolean): PresenceChange[] {
    const online = this.isOnline(userId);
    if (online === wasOnline) return [];
    const changedAtMs = this.clock.wallNowMs();
    if (online) {
      this.offlineSinceMs.delete(userId);
      this.onlineSinceMs.set(userId, changedAtMs);
    } else {
      this.onlineSinceMs.delete(userId);
      this.offlineSinceMs.delete(userId);
      this.offlineSinceMs.set(userId, changedAtMs);
      while (this.offlineSinceMs.size > this.options.offlineUsersRememberedMax) {
        const oldest = this.oldestOffline.next();
        if (oldest === undefined) break;
        this.offlineSinceMs.delete(oldest);
      }
    }
    return [{ userId, status: online ? "online" : "offline", changedAtMs }];
  }
}
