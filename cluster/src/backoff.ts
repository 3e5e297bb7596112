// Jittered, bounded exponential backoff; pure, with randomness injected.
export type BackoffPolicy = { readonly initialDelayMs: number; readonly maxDelayMs: number; readonly multiplier: number };

/** "Full jitter": a uniform delay in [0, min(max, initial·multiplier^attempt)]. attempt counts from 0. */
export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * Math.pow(policy.multiplier, Math.max(0, attempt)));
  return Math.floor(random() * ceiling);
}
