// Lease bookkeeping for one cell, pure: fed the bucket's watch events with the local time they arrived,
// it answers which workers are alive. NATS 2.9 KV has no per-key TTL, so a lease is alive while its
// holder keeps re-writing it: a watcher that has not seen a write for `leaseMs` (by its own monotonic
// clock, so clock skew between machines does not matter) treats the worker as gone.
import type { WorkerLease } from "@cellwire/protocol";

export type LiveMember = { readonly lease: WorkerLease; readonly lastSeenAtMs: number; readonly revision: number };

export class MembershipView {
  private readonly entries = new Map<string, LiveMember>();

  /** Records a put of `lease` seen at `nowMs`. Returns true when the live set may have changed. */
  applyPut(lease: WorkerLease, revision: number, nowMs: number): boolean {
    const known = this.entries.get(lease.workerId);
    if (known !== undefined && known.revision > revision) return false;
    this.entries.set(lease.workerId, { lease, lastSeenAtMs: nowMs, revision });
    return known === undefined || !this.isAlive(known, nowMs);
  }

  /** Records a delete or purge of a worker's lease (a graceful stop). */
  applyDelete(workerId: string): boolean {
    return this.entries.delete(workerId);
  }

  isAlive(member: LiveMember, nowMs: number): boolean {
    return nowMs - member.lastSeenAtMs <= member.lease.leaseMs;
  }

  /** Forgets leases that expired; returns whether any did. */
  expire(nowMs: number): boolean {
    let changed = false;
    for (const [workerId, member] of this.entries) {
      if (!this.isAlive(member, nowMs)) {
        this.entries.delete(workerId);
        changed = true;
      }
    }
    return changed;
  }

  live(nowMs: number): LiveMember[] {
    return [...this.entries.values()].filter((member) => this.isAlive(member, nowMs));
  }
}
