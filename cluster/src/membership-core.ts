// The decisions of a membership watcher and of a lease holder, apart from NATS and timers: which watch
// entries change the ring, when the bucket's replay is over, which expired leases to delete, and whether a
// worker still holds its own lease. MembershipWatcher and LeaseHolder (membership.ts) feed them from the
// bucket and the clock; the simulation (sim/) feeds the same code from a simulated bucket and a
// virtual clock, so what it checks is the code that runs.
import { workerLease, workerRequestSubjects, type WorkerRequestSubjects } from "@cellwire/protocol";
import { MembershipView, type ExpiredMember } from "./membership-view.ts";
import { decodeMessage } from "./nats-json.ts";
import { Ring } from "./ring.ts";

export type MembershipSnapshot = {
  readonly ring: Ring;
  readonly subjects: ReadonlyMap<string, string>;
  /** Each member's subject per request channel (docs/decisions/0015), built with the ring rather than per request. */
  readonly requestSubjects: ReadonlyMap<string, WorkerRequestSubjects>;
  /**
   * The bucket revision of the last change to the ring's members (see MembershipView): watchers that read
   * the bucket up to the same point agree on it, and a later ring has a higher epoch. Workers write with it
   * so that the database can refuse a stale owner.
   */
  readonly ringEpoch: number;
};

/** One entry of a watch of the membership bucket (keys under `worker.`), as the KV client hands it over. */
export type MembershipWatchEntry = {
  readonly key: string;
  readonly operation: "PUT" | "DEL" | "PURGE";
  readonly value: Uint8Array;
  readonly revision: number;
  /** Messages still pending for this watch after this one: 0 once the watch has caught up (the KV client may leave it out). */
  readonly delta: number | undefined;
  /** False for the entries of the watch's initial replay of the bucket's latest values. */
  readonly isUpdate: boolean;
  /** The server's timestamp of the entry. */
  readonly createdAtWallMs: number;
};

/** What the watcher has to do after an entry: warn about a malformed lease, tell its listeners. */
export type MembershipEntryOutcome = {
  readonly malformed: boolean;
  /** "published": the ring changed; "replay-ended": the replay is over and the first ring is out. */
  readonly change: "none" | "published" | "replay-ended";
};

/** The period below which a watcher's expiry check is never set: a short lease must not make it a busy loop. */
const leaseExpiryCheckIntervalMsMin = 50;

/**
 * How often a watcher looks for expired leases: a quarter of the lease, so an expired lease is deleted
 * (and its keys move) within 1.25 leases, and no more often than every 50 ms. Every watcher of a cell uses
 * it (the worker's, the router's, the simulation's), so they agree on when a lease is gone.
 */
export function leaseExpiryCheckIntervalMs(leaseMs: number): number {
  return Math.max(leaseExpiryCheckIntervalMsMin, Math.floor(leaseMs / 4));
}

export class MembershipCore {
  private readonly view = new MembershipView();
  private snapshotValue: MembershipSnapshot = { ring: new Ring([]), subjects: new Map(), requestSubjects: new Map(), ringEpoch: 0 };
  private replayingValue = true;
  /**
   * True while a watch that resumed after the last applied revision catches up. The bucket keeps one
   * revision per key, so it hands over the latest value of each key changed meanwhile, not the changes:
   * like the replay, the catch-up raises the epoch to every revision it reads and publishes once, when
   * caught up, so the epoch is never lower than that of a watcher that saw every change, and no partial
   * ring is published under it. Unlike the replay, its entries are dated as seen now.
   */
  private catchingUp = false;
  /** Workers whose expired lease this watcher is deleting now (at most one delete in flight per lease). */
  private readonly deleting = new Set<string>();
  /** True while this watcher's NATS connection is down: no lease is judged expired meanwhile. */
  private disconnected = false;

  constructor(readonly cellId: string) {}

  get snapshot(): MembershipSnapshot {
    return this.snapshotValue;
  }

  /** True until the bucket's contents at the start of the watch have been read (or the wait given up). */
  get replaying(): boolean {
    return this.replayingValue;
  }

  /**
   * Applies one watch entry seen at `monotonicNowMs` (this process's wall clock reads `wallNowMs`). The
   * snapshot is published (rebuilt) when the ring changed after the replay, or when this entry ends it.
   */
  applyEntry(entry: MembershipWatchEntry, monotonicNowMs: number, wallNowMs: number): MembershipEntryOutcome {
    if (this.replayingValue || this.catchingUp) this.view.raiseEpoch(entry.revision);
    let changed = false;
    let malformed = false;
    if (entry.operation === "PUT") {
      const decoded = decodeMessage(workerLease, entry.value);
      // A lease must sit under its own worker's key: that key is what an expiry deletes.
      if (!decoded.ok || decoded.value.cellId !== this.cellId || entry.key !== `worker.${decoded.value.workerId}`) {
        malformed = true;
      } else {
        // Entries replayed at start may be old: date them by the server's timestamp, not by now.
        const ageMs = entry.isUpdate ? 0 : Math.max(0, wallNowMs - entry.createdAtWallMs);
        changed = this.view.applyPut(decoded.value, entry.revision, monotonicNowMs - ageMs);
      }
    } else {
      changed = this.view.applyDelete(entry.key.slice("worker.".length), entry.revision);
    }
    if (this.replayingValue) {
      // Caught up with the bucket: nothing written before this entry is still to come. (Waiting for the
      // revision read by status() alone is not enough: a key renewed after status() arrives after it, and
      // a ring published without that key would not be the ring of its epoch.)
      if (entry.delta === 0 && this.endReplay()) return { malformed, change: "replay-ended" };
      return { malformed, change: "none" };
    }
    if (this.catchingUp) return { malformed, change: entry.delta === 0 && this.endCatchUp() ? "published" : "none" };
    if (!changed) return { malformed, change: "none" };
    this.publish();
    return { malformed, change: "published" };
  }

  /** Ends the replay and publishes the first snapshot; false when it had ended already. */
  endReplay(): boolean {
    if (!this.replayingValue) return false;
    this.replayingValue = false;
    this.publish();
    return true;
  }

  /**
   * A new watch resumes after the last applied revision (the previous one stalled): its entries up to the
   * first with nothing left to deliver are a catch-up (see catchingUp). During the replay, the replay
   * covers it.
   */
  beginCatchUp(): void {
    if (!this.replayingValue) this.catchingUp = true;
  }

  /** Ends a catch-up, publishing when the epoch moved; false when none was under way or nothing moved. */
  endCatchUp(): boolean {
    if (!this.catchingUp) return false;
    this.catchingUp = false;
    if (this.view.epoch === this.snapshotValue.ringEpoch) return false;
    this.publish();
    return true;
  }

  /**
   * This watcher's NATS connection dropped. Until it is back no holder that renews through the same
   * servers can renew, so their silence says nothing about them: no lease expires here meanwhile.
   */
  connectionLost(): void {
    this.disconnected = true;
  }

  /**
   * The connection is back at `monotonicNowMs`: every lease counts from now, so holders get a whole lease
   * to renew through the servers that just came back (as ZooKeeper restarts its session timeouts when a
   * new leader takes over). Deleting them at once would move every key of the cell to whichever worker
   * reconnected first, and back again at the others' next renewal: two ring changes, and writes fenced
   * in between, for an outage that no worker caused.
   */
  connectionRestored(monotonicNowMs: number): void {
    this.disconnected = false;
    this.view.restartLeaseClocks(monotonicNowMs);
  }

  /**
   * The expired leases to delete now (compare-and-set on the returned revision), leaving out those whose
   * delete is still in flight; each MUST be followed by `endDelete` once its delete settled. None while
   * the connection is down (see connectionLost).
   */
  beginExpiredDeletes(monotonicNowMs: number): ExpiredMember[] {
    const toDelete: ExpiredMember[] = [];
    if (this.disconnected) return toDelete;
    for (const expired of this.view.expired(monotonicNowMs)) {
      if (this.deleting.has(expired.workerId)) continue;
      this.deleting.add(expired.workerId);
      toDelete.push(expired);
    }
    return toDelete;
  }

  endDelete(workerId: string): void {
    this.deleting.delete(workerId);
  }

  /** The longest leaseMs among the current members (undefined without any): how quiet a live watch may be. */
  get longestLeaseMs(): number | undefined {
    let longest: number | undefined;
    for (const member of this.view.members()) longest = Math.max(longest ?? 0, member.lease.leaseMs);
    return longest;
  }

  private publish(): void {
    const members = this.view.members();
    const subjects = new Map(members.map((member) => [member.lease.workerId, member.lease.subject]));
    const requestSubjects = new Map(members.map((member) => [member.lease.workerId, workerRequestSubjects(member.lease.subject)]));
    this.snapshotValue = { ring: new Ring(subjects.keys()), subjects, requestSubjects, ringEpoch: this.view.epoch };
  }
}

/** What a watcher knows when it asks whether its watch still delivers. */
export type WatchProgress = {
  readonly monotonicNowMs: number;
  /** When the current watch last delivered an entry (or was started, if it has delivered none). */
  readonly lastEntryAtMs: number;
  /** How long a healthy watch of a live cell may stay quiet: a lease, since every holder renews within it. */
  readonly quietLimitMs: number;
  readonly lastAppliedRevision: number;
  /** The bucket's last revision as status() reported it. */
  readonly bucketLastRevision: number;
};

/**
 * Whether a watch has stalled: it delivered nothing for longer than a lease although the bucket holds a
 * revision it has not applied. A KV watch is a single-replica consumer that the NATS client recreates only
 * after two missed 30 s heartbeats, so a watch whose consumer lived on a dead node goes silent for ~90 s.
 * A quiet bucket (no revision past the applied one) is not a stall, however long it stays quiet.
 */
export function watchStalled(progress: WatchProgress): boolean {
  return watchQuiet(progress) && progress.bucketLastRevision > progress.lastAppliedRevision;
}

/**
 * Whether a watch has delivered nothing for longer than its quiet limit: only then can it have stalled,
 * so only then is the bucket worth asking for its last revision (a JetStream API call).
 */
export function watchQuiet(progress: Pick<WatchProgress, "monotonicNowMs" | "lastEntryAtMs" | "quietLimitMs">): boolean {
  return progress.monotonicNowMs - progress.lastEntryAtMs > progress.quietLimitMs;
}

/**
 * Whether a worker holds its own lease: only while its last successful renewal STARTED less than leaseMs
 * ago. Dating a renewal by its start (not by its reply) keeps the holder's judgement no later than any
 * watcher's, who dates the same write by when it saw it, which is after it was sent.
 */
export class LeaseTerm {
  private lastRenewedAtMs = Number.NEGATIVE_INFINITY;

  constructor(readonly leaseMs: number) {}

  /** A renewal that started at `startedAtMs` was acknowledged by the bucket. */
  renewed(startedAtMs: number): void {
    // Renewals may answer out of order (an old one no longer waited for can land after a newer one).
    this.lastRenewedAtMs = Math.max(this.lastRenewedAtMs, startedAtMs);
  }

  holds(monotonicNowMs: number): boolean {
    return monotonicNowMs - this.lastRenewedAtMs < this.leaseMs;
  }
}
