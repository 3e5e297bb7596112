// Gathers the calls made within one turn of the event loop and runs them together, on the next turn
// (the scheduler: setImmediate outside tests), at most `itemsMax` to a run. No timer waits for more: a
// lone call waits only for the end of its turn. Used where every connect makes a call: a worker's mailbox
// pages (the requests of one NATS read become one statement, one write to Postgres and one flush of the
// replies) and an edge's directory resolves (one request for a turn's new users); docs/performance.md.
//
// Each call gets its own outcome: a run reports one per input, so one bad row fails only its caller. A
// run that throws fails every caller of that run. Under it, TurnQueue hands what came within a turn over at
// its end; the edge's TurnWrites (one write per socket per turn) uses it too.

/** One input's outcome from a run. */
export type Settled<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown };

/**
 * What arrives within one turn, handed over together at its end: `flushItems` gets the items in arrival
 * order, once per turn that had any. The turn's end is `schedule`'s to reach (setImmediate outside
 * tests: after the turn's I/O callbacks and their microtasks).
 */
export class TurnQueue<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(
    private readonly flushItems: (items: T[]) => void,
    private readonly schedule: (callback: () => void) => void,
  ) {}

  push(item: T): void {
    this.items.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(this.flush);
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const items = this.items;
    this.items = [];
    this.flushItems(items);
  };
}

type Waiting<I, O> = { readonly input: I; readonly resolve: (value: O) => void; readonly reject: (error: unknown) => void };

export class TurnBatch<I, O> {
  private readonly waiting: TurnQueue<Waiting<I, O>>;

  /**
   * `runMany` answers its inputs in order, one outcome each; `itemsMax` bounds a run (and so what one
   * statement returns at once); `schedule` runs its callback at the end of the current turn.
   */
  constructor(
    private readonly runMany: (inputs: readonly I[]) => Promise<readonly Settled<O>[]>,
    itemsMax: number,
    schedule: (callback: () => void) => void,
  ) {
    if (!Number.isSafeInteger(itemsMax) || itemsMax < 1) throw new RangeError(`itemsMax must be a positive integer, not ${itemsMax}`);
    this.waiting = new TurnQueue((turn) => {
      for (let start = 0; start < turn.length; start += itemsMax) void this.runPart(turn.slice(start, start + itemsMax));
    }, schedule);
  }

  run(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => this.waiting.push({ input, resolve, reject }));
  }

  private async runPart(part: readonly Waiting<I, O>[]): Promise<void> {
    let outcomes: readonly Settled<O>[];
    try {
      outcomes = await this.runMany(part.map((waiting) => waiting.input));
      if (outcomes.length !== part.length) throw new Error(`a batched run answered ${outcomes.length} of ${part.length} inputs`);
    } catch (error) {
      for (const waiting of part) waiting.reject(error);
      return;
    }
    part.forEach((waiting, index) => {
      const outcome = outcomes[index];
      if (outcome?.ok === true) waiting.resolve(outcome.value);
      else waiting.reject(outcome?.error);
    });
  }
}
