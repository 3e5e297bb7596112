// Jittered, bounded exponential backoff. Pure: the caller passes the random source, so tests (and a
// seeded simulation) reproduce every delay.

export type BackoffOptions = {
  /** Upper bound of the first delay (attempt 0). */
  readonly initialDelayMs: number;
  /** No delay ever exceeds this, whatever the attempt number. */
  readonly delayMsMax: number;
  /** Growth of the upper bound per attempt. */
  readonly multiplier: number;
  /**
   * Share of the bound that is randomised, in [0, 1]: the delay is drawn from
   * [bound × (1 − jitterRatio), bound]. Jitter spreads the reconnects of many clients after one edge dies.
   */
  readonly jitterRatio: number;
};

export const defaultBackoffOptions: BackoffOptions = {
  initialDelayMs: 500,
  delayMsMax: 30_000,
  multiplier: 2,
  jitterRatio: 0.5,
};

/** A source of uniformly distributed numbers in [0, 1), like Math.random. */
export type RandomSource = () => number;

/** Throws on options that are a programmer error (negative, NaN, jitter outside [0, 1]). */
export function normaliseBackoffOptions(
  options: Partial<BackoffOptions> = {},
  base: BackoffOptions = defaultBackoffOptions,
): BackoffOptions {
  const normalised = { ...base, ...withoutUndefined(options) };
  const { initialDelayMs, delayMsMax, multiplier, jitterRatio } = normalised;
  if (!(Number.isFinite(initialDelayMs) && initialDelayMs >= 0))
    throw new RangeError(`backoff initialDelayMs must be >= 0, got ${initialDelayMs}`);
  if (!(Number.isFinite(delayMsMax) && delayMsMax >= initialDelayMs)) {
    throw new RangeError(`backoff delayMsMax must be >= initialDelayMs, got ${delayMsMax}`);
  }
  if (!(Number.isFinite(multiplier) && multiplier >= 1)) throw new RangeError(`backoff multiplier must be >= 1, got ${multiplier}`);
  if (!(jitterRatio >= 0 && jitterRatio <= 1)) throw new RangeError(`backoff jitterRatio must be within [0, 1], got ${jitterRatio}`);
  return normalised;
}

/** The upper bound of the delay before attempt `attempt` (0-based), without jitter. */
export function backoffBoundMs(attempt: number, options: BackoffOptions): number {
  const exponent = Math.max(0, Math.floor(attempt));
  // Computed step by step so a huge attempt number saturates at delayMsMax instead of overflowing to Infinity.
  let bound = options.initialDelayMs;
  for (let step = 0; step < exponent && bound < options.delayMsMax; step++) bound *= options.multiplier;
  return Math.min(bound, options.delayMsMax);
}

/** The delay before attempt `attempt` (0-based): an integer in [⌊bound × (1 − jitterRatio)⌋, bound]. */
export function backoffDelayMs(attempt: number, options: BackoffOptions, random: RandomSource): number {
  const bound = backoffBoundMs(attempt, options);
  const sample = clampUnit(random());
  // Rounded down, so the delay never exceeds its bound (nor delayMsMax).
  return Math.floor(bound * (1 - options.jitterRatio * sample));
}

/**
 * The delay of a failover: the one reconnect that skips the backoff after an established session dropped,
 * to another edge URL. An integer in [0, ⌊initialDelayMs × jitterRatio⌋]: near immediate, yet the clients
 * of an edge that died together do not all reach the next edge in the same millisecond.
 */
export function failoverDelayMs(options: BackoffOptions, random: RandomSource): number {
  // As in backoffDelayMs, a sample of 0 gives the top of the window.
  return Math.floor(options.initialDelayMs * options.jitterRatio * (1 - clampUnit(random())));
}

/**
 * The delay before retry `retry` (0-based) of a request after a retryable error reply. Without
 * `retryAfterMs` it is the backoff delay. With it (the edge asked the client to stay away that long,
 * docs/decisions/0010) it is never below retryAfterMs: drawn from [retryAfterMs, ⌊retryAfterMs × (1 +
 * jitterRatio)⌋], so the clients one overloaded edge refused together do not all return in the same
 * millisecond, and never below the backoff delay either, so retries still slow down when the hint is short.
 */
export function retryDelayMs(retry: number, options: BackoffOptions, random: RandomSource, retryAfterMs?: number): number {
  // One draw either way, so a seeded random source yields the same sequence whether or not hints arrive.
  const sample = clampUnit(random());
  const backoff = backoffDelayMs(retry, options, () => sample);
  if (retryAfterMs === undefined || !(retryAfterMs > 0)) return backoff;
  const spread = Math.floor(retryAfterMs * options.jitterRatio * sample);
  return Math.max(backoff, Math.ceil(retryAfterMs) + spread);
}

// A misbehaving injected source must not push a delay out of its bounds.
function clampUnit(value: number): number {
  if (!Number.isFinite(value) || value < 0) return 0;
  return value >= 1 ? 1 : value;
}

function withoutUndefined<T extends object>(value: Partial<T>): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as Partial<T>;
}
