// How often one session may send typing: at most one frame per conversation every intervalMs, and in at
// most conversationsMax conversations within one interval. Pure: the caller passes the (monotonic) time.
// A typing frame that the limiter lets through counts even if it is refused later (a non-member's), so
// a session cannot make its edge ask a cell more often than the limit either.

export class TypingRateLimiter {
  /**
   * Conversation → when its last typing frame was let through; never more than conversationsMax entries.
   * Made on the first typing frame: every session has a limiter, most never type, and an empty Map costs
   * an idle session about 250 bytes.
   */
  private lastAcceptedAtMs: Map<string, number> | undefined;

  constructor(
    private readonly intervalMs: number,
    private readonly conversationsMax: number,
  ) {
    if (!Number.isSafeInteger(intervalMs) || intervalMs < 0) throw new RangeError(`intervalMs must be an integer >= 0, got ${intervalMs}`);
    if (!Number.isSafeInteger(conversationsMax) || conversationsMax < 1)
      throw new RangeError(`conversationsMax must be a positive integer, got ${conversationsMax}`);
  }

  /** The conversations that still restrict the session (tests and metrics). */
  get size(): number {
    return this.lastAcceptedAtMs?.size ?? 0;
  }

  /** True, and counted, when a typing frame for the conversation may go now; false when it is too soon. */
  tryAccept(conversationId: string, nowMs: number): boolean {
    const accepted = (this.lastAcceptedAtMs ??= new Map());
    const lastMs = accepted.get(conversationId);
    if (lastMs !== undefined && nowMs - lastMs < this.intervalMs) return false;
    if (lastMs === undefined && accepted.size >= this.conversationsMax) {
      this.forgetLapsed(accepted, nowMs);
      if (accepted.size >= this.conversationsMax) return false;
    }
    accepted.set(conversationId, nowMs);
    return true;
  }

  /**
   * After a refusal by tryAccept at the same time: the milliseconds until a typing frame for the
   * conversation would be let through (its interval ends, or the first of the other conversations' does),
   * in whole milliseconds rounded up, as `retryAfterMs` is.
   */
  retryAfterMs(conversationId: string, nowMs: number): number {
    const accepted = this.lastAcceptedAtMs;
    if (accepted === undefined) return 0;
    const lastMs = accepted.get(conversationId);
    if (lastMs !== undefined) return Math.max(0, Math.ceil(this.intervalMs - (nowMs - lastMs)));
    let soonestMs = this.intervalMs;
    for (const acceptedAtMs of accepted.values())
      soonestMs = Math.min(soonestMs, Math.max(0, Math.ceil(this.intervalMs - (nowMs - acceptedAtMs))));
    return soonestMs;
  }

  /** Entries older than the interval restrict nothing any more. */
  private forgetLapsed(accepted: Map<string, number>, nowMs: number): void {
    for (const [conversationId, acceptedAtMs] of accepted) {
      if (nowMs - acceptedAtMs >= this.intervalMs) accepted.delete(conversationId);
    }
  }
}
