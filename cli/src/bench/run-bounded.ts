// A benchmark's load process runs its connects, joins and creations with a bound on how many are in flight.
import { describeError } from "./chat/load-messages.ts";

/** Runs `operation` over `items`, at most `inFlightMax` at a time; counts failures and keeps the first reason. */
export async function runBounded<T>(
  items: readonly T[],
  inFlightMax: number,
  operation: (item: T) => Promise<void>,
): Promise<{ failed: number; firstError: string | null }> {
  let next = 0;
  let failed = 0;
  let firstError: string | null = null;
  const lane = async (): Promise<void> => {
    for (let index = next++; index < items.length; index = next++) {
      const item = items[index];
      if (item === undefined) continue;
      try {
        await operation(item);
      } catch (error) {
        failed++;
        firstError ??= describeError(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlightMax, items.length) }, lane));
  return { failed, firstError };
}
