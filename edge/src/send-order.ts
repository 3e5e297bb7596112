// The order of one session's sends to each conversation (docs/decisions/0020). Each send is told the
// send before it that is not known to be stored (its predecessor), which the cell stores first or
// answers `out_of_order`; so a send slowed down or retried (a row lock, a ring change) never lands after
// the sends its session made behind it.
//
// Per conversation the session keeps its unsettled sends in the order it first saw them: in flight, or
// failed with a retryable code (the client may retry them: until holdMs after the failure they stay, and a
// later send names them). A send is named the one before it in that list, at each (re)transmission. An
// acked send leaves with every send before it (they are stored: it could not be stored before them); a
// send that failed for good leaves alone, and the sends after it name the one before it on their next
// transmission. Pure: the session passes the clock and settles each send it began.

export type SendOrderLimits = {
  /** Sends kept per session, over all its conversations; past it the oldest failed one is forgotten. */
  readonly entriesMax: number;
  /** How long a send that failed with a retryable code still comes before the later sends. */
  readonly holdMs: number;
};

/** How a send ended on the edge: acked, failed with a retryable code, or failed for good. */
export type SendOutcome = "stored" | "retryable" | "final";

type Entry = { readonly clientMessageId: string; failedAtMs: number | undefined };

export class SendOrder {
  private readonly conversations = new Map<string, Entry[]>();
  private entries = 0;

  constructor(private readonly limits: SendOrderLimits) {
    if (!(limits.entriesMax >= 1 && limits.holdMs >= 0)) throw new RangeError("SendOrder needs entriesMax >= 1 and holdMs >= 0");
  }

  /** Sends kept (in flight or held after a retryable failure), over all conversations. */
  get size(): number {
    return this.entries;
  }

  /**
   * A send (or a retry of one) is going to the cell: returns the clientMessageId it must follow, undefined
   * when none. MUST be followed by settle() for the same send.
   */
  begin(conversationId: string, clientMessageId: string, nowMs: number): string | undefined {
    const list = this.conversations.get(conversationId) ?? [];
    this.expire(conversationId, list, nowMs);
    const index = list.findIndex((entry) => entry.clientMessageId === clientMessageId);
    if (index >= 0) {
      const entry = list[index];
      if (entry !== undefined) entry.failedAtMs = undefined;
      return list[index - 1]?.clientMessageId;
    }
    if (this.entries >= this.limits.entriesMax && !this.forgetOldestFailed()) return list.at(-1)?.clientMessageId;
    const predecessor = list.at(-1)?.clientMessageId;
    list.push({ clientMessageId, failedAtMs: undefined });
    this.entries += 1;
    this.conversations.set(conversationId, list);
    return predecessor;
  }

  /** How the send begun last under this id ended. */
  settle(conversationId: string, clientMessageId: string, outcome: SendOutcome, nowMs: number): void {
    const list = this.conversations.get(conversationId);
    if (list === undefined) return;
    const index = list.findIndex((entry) => entry.clientMessageId === clientMessageId);
    const entry = list[index];
    if (entry === undefined) return;
    if (outcome === "retryable") {
      entry.failedAtMs = nowMs;
      return;
    }
    // Stored: the sends before it are stored too (each was its predecessor's condition), so they go with it.
    const removed = outcome === "stored" ? list.splice(0, index + 1) : list.splice(index, 1);
    this.entries -= removed.length;
    if (list.length === 0) this.conversations.delete(conversationId);
  }

  /** Forgets the failed sends of a conversation whose hold ran out: the client did not retry them in time. */
  private expire(conversationId: string, list: Entry[], nowMs: number): void {
    const kept = list.filter((entry) => entry.failedAtMs === undefined || nowMs - entry.failedAtMs < this.limits.holdMs);
    if (kept.length === list.length) return;
    this.entries -= list.length - kept.length;
    list.splice(0, list.length, ...kept);
    if (list.length === 0) this.conversations.delete(conversationId);
  }

  /** Makes room: forgets the failed send that failed first, in any conversation; false when none failed. */
  private forgetOldestFailed(): boolean {
    let oldest: { list: Entry[]; index: number; conversationId: string; failedAtMs: number } | undefined;
    for (const [conversationId, list] of this.conversations) {
      list.forEach((entry, index) => {
        if (entry.failedAtMs !== undefined && (oldest === undefined || entry.failedAtMs < oldest.failedAtMs)) {
          oldest = { list, index, conversationId, failedAtMs: entry.failedAtMs };
        }
      });
    }
    if (oldest === undefined) return false;
    oldest.list.splice(oldest.index, 1);
    this.entries -= 1;
    if (oldest.list.length === 0) this.conversations.delete(oldest.conversationId);
    return true;
  }
}
