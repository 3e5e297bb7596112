// The safety properties, checked as the run goes (the first violation stops it):
// - per key, committed writes have seqs 1..n, no gap, no repeat, and one write id commits once;
// - a write never commits under an epoch lower than one a key was already written under (once a newer
//   owner wrote, a stale owner never commits);
// - in one epoch, one key is committed by one worker only (never two owners committing);
// - one epoch names one ring: every watcher that publishes a ring with epoch E publishes the same members;
// - every write a client saw acknowledged is in the database at the seq it was told.
import type { Commit, SimulatedDatabase } from "./simulated-database.ts";

export type ViolationKind =
  | "gap-or-repeated-seq"
  | "write-committed-twice"
  | "stale-owner-committed"
  | "two-owners-in-one-epoch"
  | "epoch-names-two-rings"
  | "acknowledged-write-lost";

export type Violation = { readonly kind: ViolationKind; readonly atMs: number; readonly detail: string };

export class SafetyChecker {
  private readonly found: Violation[] = [];
  private readonly lastSeqByKey = new Map<string, number>();
  private readonly highestEpochByKey = new Map<string, { readonly epoch: number; readonly workerId: string; readonly seq: number }>();
  private readonly committerByKeyEpoch = new Map<string, string>();
  private readonly committedWriteIds = new Set<string>();
  private readonly membersByEpoch = new Map<number, { readonly members: string; readonly watcherId: string }>();
  private readonly acknowledged = new Map<string, { readonly key: string; readonly seq: number }>();

  get violations(): readonly Violation[] {
    return this.found;
  }

  get failed(): boolean {
    return this.found.length > 0;
  }

  onCommit(commit: Commit): void {
    const { key, seq, epoch, workerId, writeId, atMs } = commit;
    const expectedSeq = (this.lastSeqByKey.get(key) ?? 0) + 1;
    if (seq !== expectedSeq)
      this.report("gap-or-repeated-seq", atMs, `${key}: write ${writeId} committed seq ${seq}, expected ${expectedSeq}`);
    this.lastSeqByKey.set(key, Math.max(seq, expectedSeq - 1));
    if (this.committedWriteIds.has(writeId))
      this.report("write-committed-twice", atMs, `${key}: write ${writeId} committed again as seq ${seq}`);
    this.committedWriteIds.add(writeId);
    const highest = this.highestEpochByKey.get(key);
    if (highest !== undefined && epoch < highest.epoch) {
      this.report(
        "stale-owner-committed",
        atMs,
        `${key}: ${workerId} committed seq ${seq} under epoch ${epoch} after ${highest.workerId} committed seq ${highest.seq} under epoch ${highest.epoch}`,
      );
    }
    if (highest === undefined || epoch >= highest.epoch) this.highestEpochByKey.set(key, { epoch, workerId, seq });
    const keyEpoch = `${key}@${epoch}`;
    const committer = this.committerByKeyEpoch.get(keyEpoch);
    if (committer !== undefined && committer !== workerId) {
      this.report("two-owners-in-one-epoch", atMs, `${key}: ${committer} and ${workerId} both committed under epoch ${epoch} (seq ${seq})`);
    }
    this.committerByKeyEpoch.set(keyEpoch, committer ?? workerId);
  }

  onPublish(watcherId: string, epoch: number, members: readonly string[], atMs: number): void {
    const named = members.join(",");
    const known = this.membersByEpoch.get(epoch);
    if (known === undefined) {
      this.membersByEpoch.set(epoch, { members: named, watcherId });
      return;
    }
    if (known.members !== named) {
      this.report(
        "epoch-names-two-rings",
        atMs,
        `epoch ${epoch}: ${known.watcherId} published [${known.members}], ${watcherId} published [${named}]`,
      );
    }
  }

  /** A client was told that `writeId` is stored at `seq` of `key`. */
  onAcknowledged(writeId: string, key: string, seq: number, database: SimulatedDatabase, atMs: number): void {
    this.acknowledged.set(writeId, { key, seq });
    this.checkAcknowledged(writeId, key, seq, database, atMs);
  }

  /** At the end of a run: every acknowledged write is still where the client was told it is. */
  checkAllAcknowledged(database: SimulatedDatabase, atMs: number): void {
    for (const [writeId, { key, seq }] of this.acknowledged) this.checkAcknowledged(writeId, key, seq, database, atMs);
  }

  get acknowledgedCount(): number {
    return this.acknowledged.size;
  }

  private checkAcknowledged(writeId: string, key: string, seq: number, database: SimulatedDatabase, atMs: number): void {
    const commit = database.commitOf(writeId);
    if (commit === undefined || commit.key !== key || commit.seq !== seq) {
      const found = commit === undefined ? "not in the database" : `in the database as ${commit.key} seq ${commit.seq}`;
      this.report("acknowledged-write-lost", atMs, `write ${writeId} acknowledged as ${key} seq ${seq} is ${found}`);
    }
  }

  private report(kind: ViolationKind, atMs: number, detail: string): void {
    // The first few are enough to diagnose; the run stops at the first anyway.
    if (this.found.length < violationsKeptMax) this.found.push({ kind, atMs, detail });
  }
}

const violationsKeptMax = 20;
