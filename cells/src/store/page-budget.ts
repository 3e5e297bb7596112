import { historyPageBytesMax } from "@cellwire/protocol";

const encoder = new TextEncoder();

/**
 * Keeps the leading items of a page (history: messages newest first; mailbox: events oldest first) while
 * their encoded size stays within bytesMax, always keeping at least one, so a page fits a NATS message
 * whatever the bodies' sizes. Returns the kept items in the given order and whether any were cut.
 */
export function trimToPageBudget<T>(items: readonly T[], bytesMax: number = historyPageBytesMax): { kept: T[]; trimmed: boolean } {
  const kept: T[] = [];
  let bytes = 0;
  for (const item of items) {
    bytes += encoder.encode(JSON.stringify(item)).length;
    if (kept.length > 0 && bytes > bytesMax) return { kept, trimmed: true };
    kept.push(item);
  }
  return { kept, trimmed: false };
}
