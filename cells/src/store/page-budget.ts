import { historyPageBytesMax, type Message } from "@cellwire/protocol";

const encoder = new TextEncoder();

/**
 * Keeps the newest messages of a page (given newest first) while their encoded size stays within
 * bytesMax, always keeping at least one, so a page fits a NATS message whatever the bodies' sizes.
 * Returns the kept messages newest first and whether any were cut.
 */
export function trimToPageBudget(newestFirst: readonly Message[], bytesMax: number = historyPageBytesMax): { kept: Message[]; trimmed: boolean } {
  const kept: Message[] = [];
  let bytes = 0;
  for (const message of newestFirst) {
    bytes += encoder.encode(JSON.stringify(message)).length;
    if (kept.length > 0 && bytes > bytesMax) return { kept, trimmed: true };
    kept.push(message);
  }
  return { kept, trimmed: false };
}
