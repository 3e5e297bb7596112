// A cell's membership in NATS JetStream KV (ZooKeeper's part in the Messages design): workers hold
// heartbeated leases; edges and workers watch the bucket and recompute the ring.
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { leaseKey, membershipBucket, workerLease, type WorkerLease } from "@cellwire/protocol";
import { MembershipView } from "./membership-view.ts";
import { Ring } from "./ring.ts";
import { decodeMessage, encodeJson } from "./nats-json.ts";

export type Clock = { readonly monotonicNowMs: () => number; readonly wallNowMs: () => number };
export const systemClock: Clock = { monotonicNowMs: () => performance.now(), wallNowMs: () => Date.now() };

export type Logger = { readonly info: (message: string) => void; readonly warn: (message: string) => void };

/**
 * Opens (creating if needed) the membership bucket of a cell. Entries older than ten leases are dropped by
 * the bucket's max_age, so leases of workers that died without deleting theirs do not pile up.
 */
export async function openMembershipBucket(connection: NatsConnection, namespace: string, cellId: string, leaseMs: number): Promise<KV> {
  const manager = new Kvm(connection);
  const name = membershipBucket(namespace, cellId);
  try {
    return await manager.create(name, { history: 1, ttl: leaseMs * 10 });
  } catch (error) {
    // The bucket exists with another max_age (another lease setting): use it as it is.
    try {
      return await manager.open(name);
    } catch {
      throw error;
    }
  }
}

/**
 * Opens a cell's membership bucket without creating it: readers (edges) must not create a bucket with
 * their own settings before the cell's workers do. Fails when the cell has never started.
 */
export async function openExistingMembershipBucket(connection: NatsConnection, namespace: string, cellId: string): Promise<KV> {
  const bucket = await new Kvm(connection).open(membershipBucket(namespace, cellId));
  await bucket.status();
  return bucket;
}

export async function destroyMembershipBucket(connection: NatsConnection, namespace: string, cellId: string): Promise<void> {
  const manager = new Kvm(connection);
  const name = membershipBucket(namespace, cellId);
  const kv = await manager.open(name);
  await kv.destroy();
}

/** Holds one worker's lease: writes it at once, then every heartbeatIntervalMs, and deletes it on stop. */
export class LeaseHolder {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastRenewedAtMs = Number.NEGATIVE_INFINITY;
  private renewing = false;

  constructor(
    private readonly bucket: KV,
    private readonly lease: WorkerLease,
    private readonly heartbeatIntervalMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.renew();
    this.timer = setInterval(() => void this.renewQuietly(), this.heartbeatIntervalMs);
  }

  /** True while the last successful renewal is younger than the lease: a worker serves only then. */
  holds(): boolean {
    return this.clock.monotonicNowMs() - this.lastRenewedAtMs < this.lease.leaseMs;
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    try {
      await this.bucket.delete(leaseKey(this.lease.workerId));
    } catch (error) {
      this.logger.warn(`could not delete lease of ${this.lease.workerId}: ${String(error)}`);
    }
  }

  private async renew(): Promise<void> {
    const startedAtMs = this.clock.monotonicNowMs();
    await this.bucket.put(leaseKey(this.lease.workerId), encodeJson(this.lease));
    this.lastRenewedAtMs = startedAtMs;
  }

  private async renewQuietly(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      await this.renew();
    } catch (error) {
      this.logger.warn(`lease renewal of ${this.lease.workerId} failed: ${String(error)}`);
    } finally {
      this.renewing = false;
    }
  }
}

export type MembershipSnapshot = {
  readonly ring: Ring;
  readonly subjects: ReadonlyMap<string, string>;
  /**
   * The bucket revision of the last change to the ring's members (see MembershipView): watchers that read
   * the bucket up to the same point agree on it, and a later ring has a higher epoch. Workers write with it
   * so that the database can refuse a stale owner.
   */
  readonly epoch: number;
};

/**
 * Watches a cell's membership bucket and keeps the ring of its members. `ready` resolves once the
 * bucket's current contents have been read (or after readyDeadlineMs, whichever comes first); until then
 * the snapshot is the empty ring of epoch 0, so nobody acts on a half-read bucket.
 *
 * A lease that nobody renewed within its leaseMs is deleted in the bucket by the watchers that notice it,
 * each with compare-and-set on the revision it saw: one wins, and the removal gets a revision (the new
 * epoch) of its own; a holder that renewed meanwhile makes every such delete fail harmlessly.
 */
export class MembershipWatcher {
  private readonly view = new MembershipView();
  private snapshotValue: MembershipSnapshot = { ring: new Ring([]), subjects: new Map(), epoch: 0 };
  private readonly listeners = new Set<(snapshot: MembershipSnapshot) => void>();
  /** Workers whose expired lease this watcher is deleting now (at most one delete in flight per lease). */
  private readonly deleting = new Set<string>();
  private expiryTimer: ReturnType<typeof setInterval> | undefined;
  private readyTimer: ReturnType<typeof setTimeout> | undefined;
  private stopWatching: (() => void) | undefined;
  private replaying = true;
  private stopped = false;
  private resolveReady: () => void = () => {};
  readonly ready: Promise<void>;

  constructor(
    private readonly bucket: KV,
    private readonly cellId: string,
    private readonly expiryCheckIntervalMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly readyDeadlineMs = 2000,
  ) {
    this.ready = new Promise((resolve) => {
      this.resolveReady = resolve;
    });
  }

  get snapshot(): MembershipSnapshot {
    return this.snapshotValue;
  }

  onChange(listener: (snapshot: MembershipSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    const status = await this.bucket.status();
    const state = status.streamInfo.state;
    const initialRevision = state.messages === 0 ? 0 : state.last_seq;
    if (initialRevision === 0) {
      this.endReplay();
    } else {
      this.readyTimer = setTimeout(() => {
        this.logger.warn(`membership of cell ${this.cellId} not read up to revision ${initialRevision} within ${this.readyDeadlineMs} ms; using what was read`);
        this.endReplay();
      }, this.readyDeadlineMs);
    }
    const iterator = await this.bucket.watch({ key: "worker.>" });
    this.stopWatching = () => iterator.stop();
    this.expiryTimer = setInterval(() => this.deleteExpiredLeases(), this.expiryCheckIntervalMs);
    void (async () => {
      for await (const entry of iterator) {
        const nowMs = this.clock.monotonicNowMs();
        if (this.replaying) this.view.raiseEpoch(entry.revision);
        let changed = false;
        if (entry.operation === "PUT") {
          const decoded = decodeMessage(workerLease, entry.value);
          // A lease must sit under its own worker's key: that key is what an expiry deletes.
          if (!decoded.ok || decoded.value.cellId !== this.cellId || entry.key !== `worker.${decoded.value.workerId}`) {
            this.logger.warn(`ignoring malformed lease ${entry.key} in cell ${this.cellId}`);
          } else {
            // Entries replayed at start may be old: date them by the server's timestamp, not by now.
            const ageMs = entry.isUpdate ? 0 : Math.max(0, this.clock.wallNowMs() - entry.created.getTime());
            changed = this.view.applyPut(decoded.value, entry.revision, nowMs - ageMs);
          }
        } else {
          changed = this.view.applyDelete(entry.key.slice("worker.".length), entry.revision);
        }
        if (this.replaying) {
          // Caught up with the bucket: nothing written before this entry is still to come. (Waiting for
          // initialRevision alone is not enough: a key renewed after status() arrives after it, and a ring
          // published without that key would not be the ring of its epoch.)
          if (entry.delta === 0) this.endReplay();
        } else if (changed) {
          this.publish();
        }
      }
    })().catch((error: unknown) => this.logger.warn(`membership watch of cell ${this.cellId} ended: ${String(error)}`));
  }

  stop(): void {
    this.stopped = true;
    if (this.expiryTimer !== undefined) clearInterval(this.expiryTimer);
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    this.stopWatching?.();
    this.resolveReady();
  }

  private endReplay(): void {
    if (!this.replaying) return;
    this.replaying = false;
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    this.publish();
    this.resolveReady();
  }

  private deleteExpiredLeases(): void {
    if (this.stopped) return;
    for (const { workerId, revision } of this.view.expired(this.clock.monotonicNowMs())) {
      if (this.deleting.has(workerId)) continue;
      this.deleting.add(workerId);
      void this.deleteLease(workerId, revision).finally(() => this.deleting.delete(workerId));
    }
  }

  /** Deletes an expired lease if it is still at `revision`; the watch then removes it from every ring. */
  private async deleteLease(workerId: string, revision: number): Promise<void> {
    // Members entered the view only under their own key (checked on each put), so this is that key.
    const key = `worker.${workerId}`;
    try {
      await this.bucket.delete(key, { previousSeq: revision });
      this.logger.info(`lease of ${workerId} in cell ${this.cellId} expired; deleted it (last renewed at revision ${revision})`);
      return;
    } catch {
      // Most often a newer revision exists (the holder renewed, or another watcher deleted it first) and
      // reaches this watcher through the watch; otherwise the next expiry check tries again.
    }
    try {
      const current = await this.bucket.get(key);
      // The bucket's max_age dropped the entry without any event (every watcher failed to delete it for ten
      // leases): only a new delete marker removes the member everywhere. Should the holder put its lease
      // between the get and this delete, its next renewal brings it back.
      if (current === null && !this.stopped) await this.bucket.delete(key);
    } catch (error) {
      this.logger.warn(`could not delete the expired lease of ${workerId} in cell ${this.cellId}: ${String(error)}`);
    }
  }

  private publish(): void {
    const members = this.view.members();
    const subjects = new Map(members.map((member) => [member.lease.workerId, member.lease.subject]));
    this.snapshotValue = { ring: new Ring(subjects.keys()), subjects, epoch: this.view.epoch };
    for (const listener of this.listeners) listener(this.snapshotValue);
  }
}
