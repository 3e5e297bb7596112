// When the last few sends arrived at a worker, for its linger's "busy" (send-committer.ts, SendLinger):
// a ring of the last `count` arrival times, O(1) per send and no allocation.

export class RecentArrivals {
  private readonly arrivalsAtMs: Float64Array;
  /** The oldest arrival's slot, overwritten by the next. */
  private next = 0;

  constructor(count: number) {
    if (!(Number.isInteger(count) && count >= 1)) throw new RangeError("RecentArrivals needs a count >= 1");
    this.arrivalsAtMs = new Float64Array(count).fill(Number.NEGATIVE_INFINITY);
  }

  /** Counts an arrival at `nowMs`; returns when the oldest of the last `count` arrived, this one included. */
  arrive(nowMs: number): number {
    const arrivals = this.arrivalsAtMs;
    arrivals[this.next] = nowMs;
    this.next = this.next + 1 === arrivals.length ? 0 : this.next + 1;
    return arrivals[this.next] ?? nowMs;
  }
}
