// The membership bucket as the membership code relies on it (NATS JetStream KV with history 1): one
// revision counter for the whole bucket; put; delete, optionally compare-and-set on the key's last
// revision; get of the latest entry of a key (a delete marker included); status; and watches that first
// replay the latest entry of every key in revision order, then push every new entry. max_age is modelled:
// an entry older than maxAgeMs vanishes without any event, as JetStream drops it.
import type { MembershipWatchEntry } from "@cellwire/cluster";
import type { EventQueue } from "./event-queue.ts";

type StoredEntry = {
  readonly key: string;
  readonly operation: "PUT" | "DEL";
  readonly value: Uint8Array;
  readonly revision: number;
  readonly createdAtMs: number;
};

export type BucketStatus = { readonly messages: number; readonly lastRevision: number };
export type BucketDeleteResult = { readonly ok: true; readonly revision: number } | { readonly ok: false; readonly reason: string };

/** Where a watch's entries go (the simulated network link to the watching process). */
export type BucketWatchSink = (entry: MembershipWatchEntry) => void;

const emptyValue = new Uint8Array(0);

export class SimulatedBucket {
  private revision = 0;
  /** The stream: the latest entry of each key still within max_age. */
  private readonly latest = new Map<string, StoredEntry>();
  private readonly watches = new Map<number, { readonly ownerId: string; readonly sink: BucketWatchSink }>();
  private nextWatchId = 1;

  constructor(
    private readonly queue: EventQueue,
    private readonly maxAgeMs: number,
  ) {}

  status(): BucketStatus {
    this.dropAged();
    return { messages: this.latest.size, lastRevision: this.revision };
  }

  put(key: string, value: Uint8Array): number {
    this.dropAged();
    return this.append(key, "PUT", value);
  }

  /**
   * Writes a delete marker. With `previousRevision` it succeeds only while the key's latest entry has that
   * revision (JetStream's expected last subject sequence: a key with no entry has 0).
   */
  delete(key: string, previousRevision?: number): BucketDeleteResult {
    this.dropAged();
    if (previousRevision !== undefined && previousRevision > 0) {
      const currentRevision = this.latest.get(key)?.revision ?? 0;
      if (currentRevision !== previousRevision) return { ok: false, reason: `wrong last sequence: ${currentRevision}` };
    }
    return { ok: true, revision: this.append(key, "DEL", emptyValue) };
  }

  /** The latest entry of a key, a delete marker included; null when the key has none (never, or aged out). */
  get(key: string): { readonly revision: number; readonly operation: "PUT" | "DEL" } | null {
    this.dropAged();
    const entry = this.latest.get(key);
    return entry === undefined ? null : { revision: entry.revision, operation: entry.operation };
  }

  /**
   * Starts a watch: the latest entries in revision order go to the sink at once, then each new entry as
   * it is written. As in the NATS client, the last replayed entry already counts as an update and `delta`
   * is what the server still has pending for the watch after the entry.
   */
  watch(ownerId: string, sink: BucketWatchSink): { readonly watchId: number; readonly replayed: number; readonly fromRevision: number } {
    this.dropAged();
    const watchId = this.nextWatchId++;
    this.watches.set(watchId, { ownerId, sink });
    const replay = [...this.latest.values()].sort((left, right) => left.revision - right.revision);
    replay.forEach((entry, index) => sink(toWatchEntry(entry, replay.length - 1 - index, index + 1 >= replay.length)));
    return { watchId, replayed: replay.length, fromRevision: this.revision };
  }

  /** Forgets the watches of a process that is gone (the server drops its consumers). */
  unwatchAll(ownerId: string): void {
    for (const [watchId, watch] of this.watches) if (watch.ownerId === ownerId) this.watches.delete(watchId);
  }

  unwatch(watchId: number): void {
    this.watches.delete(watchId);
  }

  private append(key: string, operation: "PUT" | "DEL", value: Uint8Array): number {
    this.revision++;
    const entry: StoredEntry = { key, operation, value, revision: this.revision, createdAtMs: this.queue.nowMs };
    this.latest.set(key, entry);
    for (const watch of this.watches.values()) watch.sink(toWatchEntry(entry, 0, true));
    return this.revision;
  }

  private dropAged(): void {
    const oldestKeptAtMs = this.queue.nowMs - this.maxAgeMs;
    for (const [key, entry] of this.latest) if (entry.createdAtMs < oldestKeptAtMs) this.latest.delete(key);
  }
}

function toWatchEntry(entry: StoredEntry, delta: number, isUpdate: boolean): MembershipWatchEntry {
  return {
    key: entry.key,
    operation: entry.operation,
    value: entry.value,
    revision: entry.revision,
    delta,
    isUpdate,
    createdAtWallMs: entry.createdAtMs,
  };
}
