// The members of recently active conversations, for fan-out without a query per message. Bounded: past
// conversationsMax entries the least recently used one is forgotten. Entries are replaced by the
// membership changes this worker makes; the worker clears the cache when its cell's ring changes,
// because a conversation it gets back may have changed members on another worker meanwhile.

export class MemberCache {
  // Map iteration follows insertion order: re-inserting on each read keeps the oldest entry first.
  private readonly entries = new Map<string, readonly string[]>();

  constructor(private readonly conversationsMax: number) {
    if (!(conversationsMax >= 1)) throw new RangeError("MemberCache needs conversationsMax >= 1");
  }

  get size(): number {
    return this.entries.size;
  }

  get(conversationId: string): readonly string[] | undefined {
    const members = this.entries.get(conversationId);
    if (members !== undefined) {
      this.entries.delete(conversationId);
      this.entries.set(conversationId, members);
    }
    return members;
  }

  set(conversationId: string, members: readonly string[]): void {
    this.entries.delete(conversationId);
    this.entries.set(conversationId, [...members]);
    while (this.entries.size > this.conversationsMax) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
