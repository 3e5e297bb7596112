// Moments spread over a window, for work the edge must do for many sessions at once but need not do in
// the same millisecond: closing them when it drains (edge-drain.ts), reading their mailboxes again after a
// ring change or a NATS reconnect (catch-up-pacer.ts). Pure: the random source is injected.

/**
 * When each target's turn comes, as offsets from the start of the window, in non-decreasing order: the
 * targets in a random order, the i-th of n at a random point of the i-th n-th of the window. Stratified
 * rather than independent draws, so the turns are spread evenly (no part of the window gets many more
 * than its share) yet no two edges move in lockstep. A window of 0 puts every turn at 0.
 */
export function spreadSchedule<T>(
  targets: readonly T[],
  windowMs: number,
  random: () => number,
): { readonly target: T; readonly atMs: number }[] {
  const shuffled = [...targets];
  for (let index = shuffled.length - 1; index > 0; index--) {
    const other = Math.floor(unit(random()) * (index + 1));
    const held = shuffled[index] as T;
    shuffled[index] = shuffled[other] as T;
    shuffled[other] = held;
  }
  const slotMs = shuffled.length === 0 ? 0 : windowMs / shuffled.length;
  const lastMs = Math.max(0, windowMs - 1);
  return shuffled.map((target, index) => ({ target, atMs: Math.min(lastMs, Math.floor((index + unit(random())) * slotMs)) }));
}

// A misbehaving injected source must not put a turn outside the window.
function unit(value: number): number {
  if (!Number.isFinite(value) || value < 0) return 0;
  return value >= 1 ? 1 - Number.EPSILON : value;
}
