// When the client asks its token provider for a new token and sends it on the open socket (`refresh`),
// so the edge never has to close the session with 4101. Pure: the clock's now and the randomness are
// passed in.

/** setTimeout's largest delay (2^31 - 1 ms, about 24.8 days); a token living longer is not refreshed. */
export const timerDelayMsMax = 2_147_483_647;

/**
 * The delay before refreshing a session whose token the edge stops accepting at `tokenExpiresAtMs`:
 * between 70% and 80% of the time left (jittered, so the devices of a fleet whose tokens were issued
 * together do not all refresh at once), leaving a fifth or more of the lifetime for a slow provider and
 * for skew between this clock and the edge's. 0 when the time is already short; undefined when there is
 * nothing to schedule (no expiry, or beyond what a timer can wait).
 */
export function tokenRefreshDelayMs(nowMs: number, tokenExpiresAtMs: number | undefined, random: number): number | undefined {
  if (tokenExpiresAtMs === undefined) return undefined;
  const remainingMs = tokenExpiresAtMs - nowMs;
  if (remainingMs > timerDelayMsMax) return undefined;
  if (remainingMs <= 0) return 0;
  return Math.floor(remainingMs * (0.8 - 0.1 * Math.min(1, Math.max(0, random))));
}
