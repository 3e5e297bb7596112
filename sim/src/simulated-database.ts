// The cell's database as far as ordering and fencing go: per key (a conversation) `owner_epoch` and
// `last_seq`, and the writes with their seq. One write behaves like the send statement of the Postgres
// store (cells/README.md): a repeated write id answers its stored seq whatever the epoch (it writes
// nothing); otherwise it commits with seq last_seq + 1 only if owner_epoch <= epoch, setting owner_epoch
// to epoch in the same step, and is refused as `fenced` otherwise.

export type DatabaseWrite = { readonly key: string; readonly writeId: string; readonly workerId: string; readonly epoch: number };
export type DatabaseWriteResult =
  { readonly outcome: "stored"; readonly seq: number; readonly deduplicated: boolean } | { readonly outcome: "fenced" };
export type Commit = DatabaseWrite & { readonly seq: number; readonly atMs: number };

export type DatabaseOptions = {
  /** False plants a bug for the checker to find: writes commit whatever their epoch. */
  readonly fenceEnabled: boolean;
};

export class SimulatedDatabase {
  private readonly rows = new Map<string, { ownerEpoch: number; lastSeq: number }>();
  private readonly commitsByWriteId = new Map<string, Commit>();
  private commitCount = 0;
  private fencedCount = 0;

  constructor(
    private readonly options: DatabaseOptions,
    private readonly onCommit: (commit: Commit) => void,
  ) {}

  get commits(): number {
    return this.commitCount;
  }

  get fenced(): number {
    return this.fencedCount;
  }

  write(write: DatabaseWrite, atMs: number): DatabaseWriteResult {
    const stored = this.commitsByWriteId.get(write.writeId);
    if (stored !== undefined) return { outcome: "stored", seq: stored.seq, deduplicated: true };
    const row = this.rows.get(write.key) ?? { ownerEpoch: write.epoch, lastSeq: 0 };
    if (this.options.fenceEnabled && row.ownerEpoch > write.epoch) {
      this.fencedCount++;
      return { outcome: "fenced" };
    }
    row.ownerEpoch = write.epoch;
    row.lastSeq += 1;
    this.rows.set(write.key, row);
    const commit: Commit = { ...write, seq: row.lastSeq, atMs };
    this.commitsByWriteId.set(write.writeId, commit);
    this.commitCount++;
    this.onCommit(commit);
    return { outcome: "stored", seq: commit.seq, deduplicated: false };
  }

  commitOf(writeId: string): Commit | undefined {
    return this.commitsByWriteId.get(writeId);
  }

  lastSeq(key: string): number {
    return this.rows.get(key)?.lastSeq ?? 0;
  }
}
