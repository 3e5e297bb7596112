// How often one session may send typing: at most one frame per conversation every intervalMs, and in at
// most conversationsMax conversations within one interval. Pure: the caller passes the (monotonic) time.
// A typing frame that the limiter lets through counts even if it is refused later (a non-member's), so
// a session cannot make its edge ask a cell more often than the limit either.

export class TypingRateLimiter {
  /** Conversation → when its last typing frame was let through; never more than conversationsMax entries. */
  private readonly lastAcceptedAtMs = new Map<string, number>();

  constructor(
    private readonly intervalMs: number,
    private readonly conversationsMax: number,
  ) {
    if (!Number.isSafeInteger(intervalMs) || intervalMs < 0) throw new RangeError(`intervalMs must be an integer >= 0, got ${intervalMs}`);
    if (!Number.isSafeInteger(conversationsMax) || conversationsMax < 1) throw new RangeError(`conversationsMax must be a positive integer, got ${conversationsMax}`);
  }

  /** The conversations that still restrict the session (tests and metrics). */
  get size(): number {
    return this.lastAcceptedAtMs.size;
  }

  /** True, and counted, when a typing frame for the conversation may go now; false when it is too soon. */
  tryAccept(conversationId: string, nowMs: number): boolean {
    const lastMs = this.lastAcceptedAtMs.get(conversationId);
    if (lastMs !== undefined && nowMs - lastMs < this.intervalMs) return false;
    if (lastMs === undefined && this.lastAcceptedAtMs.size >= this.conversationsMax) {
      this.forgetLapsed(nowMs);
      if (this.lastAcceptedAtMs.size >= this.conversationsMax) return false;
    }
    this.lastAcceptedAtMs.set(conversationId, nowMs);
    return true;
  }

  /** Entries older than the interval restrict nothing any more. */
  private forgetLapsed(nowMs: number): void {
    for (const [conversationId, acceptedAtMs] of this.lastAcceptedAtMs) {
      if (nowMs - acceptedAtMs >= this.intervalMs) this.lastAcceptedAtMs.delete(conversationId);
    }
  }
}
