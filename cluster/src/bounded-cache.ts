// A bounded LRU map with an optional time to live: the one cache of the services. Workers keep users'
// home cells, member lists and the conversations whose outbox they emptied in one; edges their directory
// entries, member lists and presence answers. Past entriesMax the least recently used entry is forgotten:
// a cache, never a source of truth, so forgetting only costs a lookup.
//
// Expiry (docs/decisions/0029): an entry stored at t is served while the clock reads less than t + ttlMs,
// from when it was stored (a read renews its place in the LRU order, not its age). A ttlMs of 0 serves
// nothing again: the cache then only bounds, which is what a 0 setting asks for.
import { OldestFirst } from "./oldest-first.ts";

/** A stored value and when it expires; a class, so each costs a fixed small object (one per user on an edge). */
class CacheSlot<V> {
  constructor(
    readonly value: V,
    readonly expiresAtMs: number,
  ) {}
}

export class BoundedCache<V> {
  // Map iteration follows insertion order: re-inserting on each read keeps the oldest entry first.
  private readonly entries = new Map<string, CacheSlot<V>>();
  private readonly oldest = new OldestFirst(this.entries);

  /** ttlMs: Infinity keeps entries until evicted; nowMs: a monotonic clock. */
  constructor(
    private readonly entriesMax: number,
    private readonly ttlMs: number = Number.POSITIVE_INFINITY,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!(entriesMax >= 1)) throw new RangeError("BoundedCache needs entriesMax >= 1");
    if (!(ttlMs >= 0)) throw new RangeError("BoundedCache needs ttlMs >= 0");
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    if (entry.expiresAtMs <= this.nowMs()) return undefined;
    this.entries.set(key, entry);
    return entry.value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    // A whole number of ms: V8 keeps it in the slot itself, where a fraction (performance.now()'s) would
    // cost each slot a 16-byte box, one per user at an edge. Infinity (no expiry) stays as it is.
    this.entries.set(key, new CacheSlot(value, Math.ceil(this.nowMs() + this.ttlMs)));
    while (this.entries.size > this.entriesMax) {
      const oldest = this.oldest.next();
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
