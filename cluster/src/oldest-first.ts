// The oldest key of a Map or Set kept in insertion order (the services' bounded collections re-insert a key
// to make it the newest), found in O(1) for eviction.
//
// Why not `keys().next()`: a new iterator starts at the hash table's first slot and steps over every slot
// deleted before the first live one, and V8 compacts deleted slots only when the table fills up. A full
// collection that evicts its oldest key for every new one therefore stepped over up to half its capacity per
// eviction: 6.3 µs each at 16,384 keys (a worker's stored sends: one eviction per stored send), against
// 0.7 µs for the whole remember-and-evict with the iterator kept (docs/performance.md, "What each change bought").

/**
 * One iterator kept across evictions resumes where the last one left off. Every key before its position was
 * evicted or re-inserted at the end, so the first live key it reaches is the oldest. The caller MUST delete
 * each key it is given before asking for the next; otherwise that key is skipped, not evicted.
 *
 * Made at the first eviction, not before: a live iterator keeps the table it points at, and the tables
 * outgrown since, until its next step.
 */
export class OldestFirst<K> {
  private iterator: Iterator<K> | undefined;

  constructor(private readonly collection: { keys(): Iterator<K> }) {}

  /** The oldest key of the collection, which the caller deletes; undefined when it is empty. */
  next(): K | undefined {
    this.iterator ??= this.collection.keys();
    let step = this.iterator.next();
    // An iterator that reached the end stays there even if keys are added later: start again from the oldest.
    if (step.done === true) {
      this.iterator = this.collection.keys();
      step = this.iterator.next();
    }
    return step.done === true ? undefined : step.value;
  }
}
