// A token bucket: holds at most `burst` tokens and gains `perSecond` of them a second. Pure: the caller
// passes the (monotonic) time, so tests drive it with numbers and the edge with its injected clock. A
// request costs a few arithmetic operations and allocates nothing.

export type TokenRate = {
  /** Tokens gained per second, for good: the sustained rate. */
  readonly perSecond: number;
  /** Tokens held at most: how many requests may come at once after a quiet spell. */
  readonly burst: number;
};

export function assertTokenRate(rate: TokenRate, name: string): void {
  if (!Number.isFinite(rate.perSecond) || rate.perSecond <= 0)
    throw new RangeError(`${name}: perSecond must be above 0, got ${rate.perSecond}`);
  if (!Number.isSafeInteger(rate.burst) || rate.burst < 1)
    throw new RangeError(`${name}: burst must be an integer >= 1, got ${rate.burst}`);
}

export class TokenBucket {
  private tokens: number;
  private updatedAtMs: number;

  /** Starts full: a new session may use its burst at once. */
  constructor(
    private readonly rate: TokenRate,
    nowMs: number,
  ) {
    this.tokens = rate.burst;
    this.updatedAtMs = nowMs;
  }

  /**
   * 0 when the bucket holds at least `cost` tokens now; else the milliseconds until it will (rounded up),
   * taking nothing. `cost` above the burst would never be met: callers ask for 1, or 0 to ask whether a
   * debt (see `charge`) is paid off.
   */
  waitMs(cost: number, nowMs: number): number {
    this.refill(nowMs);
    if (this.tokens >= cost) return 0;
    // Less a millionth of a ms, so that float residue (0.98 tokens for 49 ms at 20/s) does not add a ms.
    return Math.ceil(((cost - this.tokens) * 1000) / this.rate.perSecond - 1e-6);
  }

  /** Takes `cost` tokens the caller found there with waitMs at the same time. */
  take(cost: number): void {
    this.tokens -= cost;
  }

  /**
   * Takes `cost` tokens for work already done (a cost known only after the answer), down to a debt of at
   * most one burst: the debt is paid off by the refill before waitMs(0) says 0 again, so no single charge
   * blocks for longer than burst / perSecond seconds.
   */
  charge(cost: number, nowMs: number): void {
    this.refill(nowMs);
    this.tokens = Math.max(-this.rate.burst, this.tokens - cost);
  }

  private refill(nowMs: number): void {
    const elapsedMs = nowMs - this.updatedAtMs;
    // A clock that stood still (or a caller's older reading) adds nothing and never takes.
    if (elapsedMs <= 0) return;
    this.tokens = Math.min(this.rate.burst, this.tokens + (elapsedMs * this.rate.perSecond) / 1000);
    this.updatedAtMs = nowMs;
  }
}
