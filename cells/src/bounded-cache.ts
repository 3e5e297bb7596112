// A bounded LRU map with an optional time to live. The worker keeps users' home cells in one (the
// directory is asked again once an entry expires or is evicted) and the conversations whose outbox it
// emptied in another. Past entriesMax the least recently used entry is forgotten: a cache, never a source
// of truth, so forgetting only costs a lookup.

type Entry<V> = { readonly value: V; readonly expiresAtMs: number };

export class BoundedCache<V> {
  // Map iteration follows insertion order: re-inserting on each read keeps the oldest entry first.
  private readonly entries = new Map<string, Entry<V>>();

  /** ttlMs: Infinity keeps entries until evicted; nowMs: a monotonic clock. */
  constructor(
    private readonly entriesMax: number,
    private readonly ttlMs: number = Number.POSITIVE_INFINITY,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!(entriesMax >= 1)) throw new RangeError("BoundedCache needs entriesMax >= 1");
    if (!(ttlMs > 0)) throw new RangeError("BoundedCache needs ttlMs > 0");
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
    this.entries.set(key, { value, expiresAtMs: this.nowMs() + this.ttlMs });
    while (this.entries.size > this.entriesMax) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
