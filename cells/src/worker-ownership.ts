// Which keys this worker may write now: the one answer the request handler, the send committer, the
// outbox relay and the frozen-key sweeper all ask. A key is this worker's while its lease is held (and
// its database answers, DatabaseWatchdog) and its current ring gives the key to it.
import type { LeaseHolder, MembershipSnapshot } from "@cellwire/cluster";
import type { DatabaseWatchdog } from "./database-watchdog.ts";

/** This worker's current view of its cell's ring (a MembershipSnapshot fits). */
export type OwnershipSnapshot = {
  /** ownerOf: the owner of a key, undefined when the ring is empty. */
  readonly ring: { readonly ownerOf: (key: string) => string | undefined };
  /** The ring's epoch: writes carry it, and the store refuses them once the key has a later one. */
  readonly ringEpoch: number;
};

export type OwnershipView = {
  /** Read at each check, never kept: the ring may change between a request's arrival and its turn. */
  readonly snapshot: () => OwnershipSnapshot;
  /** False once this worker failed to renew its lease in time. */
  readonly leaseHeld: () => boolean;
  /**
   * The store refused a write of `key` under `ringEpoch` as fenced: a later ring exists that this worker
   * has not seen, and its watch is asked to catch up (MembershipWatcher.suspectStale). Absent where no
   * watch feeds the ring (unit tests, the simulation).
   */
  readonly fenced?: (key: string, ringEpoch: number) => void;
};

/** What WorkerOwnership reads the ring from, and tells when a fenced write shows it behind: the cell's membership watcher. */
export type RingSource = { readonly snapshot: MembershipSnapshot; readonly suspectStale: (reason: string) => void };

export class WorkerOwnership implements OwnershipView {
  private holder: Pick<LeaseHolder, "holds"> | undefined;
  private watchdog: Pick<DatabaseWatchdog, "serving"> | undefined;

  constructor(
    private readonly workerId: string,
    private readonly ring: RingSource,
  ) {}

  /** From here on the lease counts: before it is taken (the start), the ring alone decides. */
  leaseTakenBy(holder: Pick<LeaseHolder, "holds">): void {
    this.holder = holder;
  }

  /** From here on a database the watchdog finds unreachable means the lease is given up. */
  databaseWatchedBy(watchdog: Pick<DatabaseWatchdog, "serving">): void {
    this.watchdog = watchdog;
  }

  // Arrow properties: handed on as OwnershipView's functions, they keep their object.

  /** False once this worker failed to renew its lease in time, or its database stopped answering. */
  readonly leaseHeld = (): boolean =>
    this.holder === undefined || (this.holder.holds() && (this.watchdog === undefined || this.watchdog.serving));

  /** The current ring and its epoch, read afresh at each check: a write carries the epoch of this moment. */
  readonly snapshot = (): MembershipSnapshot => this.ring.snapshot;

  readonly fenced = (key: string, ringEpoch: number): void =>
    this.ring.suspectStale(`a write of ${key} under epoch ${ringEpoch} was fenced`);

  /** Strictly the owner: with an empty ring (own lease not seen yet) nothing is owned. */
  readonly owns = (key: string): boolean => this.leaseHeld() && this.ring.snapshot.ring.ownerOf(key) === this.workerId;
}
