// The bytes of live items (mailbox events and conversation messages) one session holds while it reads
// its logs, shared by all its cursors: the count bound alone (EDGE_HELD_EVENTS_PER_SESSION_MAX per log)
// let one session hold 1,000 items of up to 32 KiB per log it reads (docs/decisions/0018).

/**
 * A per-session budget of held bytes. An item is measured by the length of its encoded frame (UTF-16 code
 * units, what the string costs in memory, read in O(1)); past the budget a cursor does not hold the item
 * and reads it from its log instead, as past the count bound.
 */
export class HeldBytesBudget {
  private usedBytes = 0;

  constructor(readonly bytesMax: number) {}

  /** Bytes held now by the session's cursors. */
  get heldBytes(): number {
    return this.usedBytes;
  }

  /** Takes `bytes` for an item to hold; false (nothing taken) when that would pass the budget. */
  tryTake(bytes: number): boolean {
    if (this.usedBytes + bytes > this.bytesMax) return false;
    this.usedBytes += bytes;
    return true;
  }

  /** An item held is written or dropped. */
  give(bytes: number): void {
    this.usedBytes -= bytes;
  }
}
