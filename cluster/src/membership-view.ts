// Lease bookkeeping for one cell, pure: fed the bucket's watch events with the local time they arrived,
// it answers which workers are members of the ring, which of their leases have expired, and the ring's
// epoch.
//
// NATS 2.9 KV has no per-key TTL, so a lease lives while its holder keeps re-writing it: a watcher that
// has not seen a write for `leaseMs` (by its own monotonic clock, so clock skew between machines does not
// matter) reports the lease as expired. Expiry does not remove the member here: the watcher deletes the
// lease key in the bucket (compare-and-set on the revision it saw), and the member leaves the ring when
// that delete comes back through the watch. So the ring is a function of the bucket's history alone, and
// every process that has read the bucket up to the same revision computes the same ring.
//
// The epoch is the revision of the last change to the member set (a put that added a member, a delete that
// removed one; renewals of members do not change it). Revisions only grow, so a later ring has a higher
// epoch, and one epoch names one ring: writes that carry it can be fenced in the database.
import type { WorkerLease } from "@cellwire/protocol";

export type LiveMember = { readonly lease: WorkerLease; readonly lastSeenAtMs: number; readonly revision: number };

/** A member whose lease nobody renewed within leaseMs, with the revision to delete it at. */
export type ExpiredMember = { readonly workerId: string; readonly revision: number };

export class MembershipView {
  private readonly entries = new Map<string, LiveMember>();
  private epochValue = 0;

  /** The revision of the last change to the member set (0 before any). */
  get epoch(): number {
    return this.epochValue;
  }

  /**
   * Records a put of `lease` at `revision`, seen at `nowMs`. Returns true when it added a member (which
   * moves the epoch to `revision`); a renewal returns false and only extends the lease.
   */
  applyPut(lease: WorkerLease, revision: number, nowMs: number): boolean {
    const known = this.entries.get(lease.workerId);
    if (known !== undefined && known.revision >= revision) return false;
    this.entries.set(lease.workerId, { lease, lastSeenAtMs: nowMs, revision });
    if (known !== undefined) return false;
    this.raiseEpoch(revision);
    return true;
  }

  /**
   * Records a delete or purge of a worker's lease at `revision` (a graceful stop, or a watcher that
   * materialised an expiry). Returns true when it removed a member, which moves the epoch to `revision`.
   */
  applyDelete(workerId: string, revision: number): boolean {
    const known = this.entries.get(workerId);
    if (known === undefined || known.revision >= revision) return false;
    this.entries.delete(workerId);
    this.raiseEpoch(revision);
    return true;
  }

  /**
   * Raises the epoch to at least `revision`. A watcher replaying the bucket sees only the latest entry of
   * each key, so it cannot tell a join from a renewal: it counts every replayed entry as a change, which
   * may give it a higher epoch than a watcher that saw the history, never a lower one.
   */
  raiseEpoch(revision: number): void {
    if (revision > this.epochValue) this.epochValue = revision;
  }

  /**
   * Counts every member's lease from `nowMs` at the latest: this watcher was cut off from NATS until then,
   * and so was every holder that renews through the same servers. Only ever later, never earlier.
   */
  restartLeaseClocks(nowMs: number): void {
    for (const [workerId, member] of this.entries) {
      if (member.lastSeenAtMs < nowMs) this.entries.set(workerId, { ...member, lastSeenAtMs: nowMs });
    }
  }

  isExpired(member: LiveMember, nowMs: number): boolean {
    return nowMs - member.lastSeenAtMs > member.lease.leaseMs;
  }

  /** Members whose lease has not been renewed within its leaseMs: the watcher deletes their keys. */
  expired(nowMs: number): ExpiredMember[] {
    return [...this.entries.values()]
      .filter((member) => this.isExpired(member, nowMs))
      .map((member) => ({ workerId: member.lease.workerId, revision: member.revision }));
  }

  /** The members of the ring: every lease put and not deleted since, expired or not. */
  members(): LiveMember[] {
    return [...this.entries.values()];
  }
}
