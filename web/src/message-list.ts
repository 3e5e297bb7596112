// The page's message list without the DOM: which position a message takes (ordered by seq) and which
// oldest entries fall off, so main.ts only mirrors these decisions into <li> elements.
import type { Message } from "@cellwire/client";

/** The page shows at most this many messages; older ones are dropped from the top. */
export const displayedMessagesMax = 500;

export type Insertion = {
  /** Where the new entry goes, counted before any eviction. */
  readonly index: number;
  /** How many entries to remove from the top afterwards (it may include the new one). */
  readonly evictedCount: number;
};

export class MessageList {
  private readonly seqs: number[] = [];

  constructor(private readonly capacity = displayedMessagesMax) {}

  get size(): number {
    return this.seqs.length;
  }

  has(seq: number): boolean {
    return this.indexOf(seq) !== null;
  }

  /** Adds `seq` in order; null when it is already shown (history and live messages overlap). */
  insert(seq: number): Insertion | null {
    const index = this.lowerBound(seq);
    if (this.seqs[index] === seq) return null;
    this.seqs.splice(index, 0, seq);
    const evictedCount = Math.max(0, this.seqs.length - this.capacity);
    this.seqs.splice(0, evictedCount);
    return { index, evictedCount };
  }

  clear(): void {
    this.seqs.length = 0;
  }

  private indexOf(seq: number): number | null {
    const index = this.lowerBound(seq);
    return this.seqs[index] === seq ? index : null;
  }

  /** The first index whose seq is >= `seq` (binary search; live messages usually land at the end). */
  private lowerBound(seq: number): number {
    let low = 0;
    let high = this.seqs.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.seqs[middle] ?? Number.POSITIVE_INFINITY) < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/** The text of one list item. */
export function formatMessageLine(message: Pick<Message, "senderUserId" | "body">): string {
  return `${message.senderUserId}: ${message.body}`;
}
