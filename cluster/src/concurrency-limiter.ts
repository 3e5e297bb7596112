// Runs at most `max` tasks at once; the others wait in arrival order. A worker's relay bounds the cell
// requests it has in flight with one, whatever the number of conversations relaying at the same moment;
// an edge bounds its reads of conversation logs with one, so a wave of resumes cannot flood a cell.
// Waiters are bounded by the callers (conversations with relay work, sessions: both bounded themselves).

export class ConcurrencyLimiter {
  private running = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly max: number) {
    if (!(max >= 1)) throw new RangeError("ConcurrencyLimiter needs max >= 1");
  }

  get active(): number {
    return this.running;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.max) this.running += 1;
    // A finishing task hands its slot straight to the first waiter, so `running` does not change then.
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiters.shift();
      if (next !== undefined) next();
      else this.running -= 1;
    }
  }
}
