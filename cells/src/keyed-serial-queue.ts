// Runs tasks one at a time per key, in the order they were enqueued, while tasks of different keys run
// concurrently. A worker keys requests by conversation (by user for mailboxes), so a client's pipelined
// sends are stored in the order they arrived, and a user's events are appended and published in order.
// The relay keys its work by conversation too. Both the pending tasks of one key and of all keys are
// bounded; past either bound a task is refused at once (the caller answers a retryable error, the relay
// leaves its rows to the sweeper) instead of queueing without limit.

export type KeyedSerialQueueLimits = {
  /** Tasks queued or running for one key. */
  readonly pendingPerKeyMax: number;
  /** Tasks queued or running across all keys. */
  readonly pendingTotalMax: number;
};

export type EnqueueResult<T> =
  { readonly accepted: true; readonly result: Promise<T> } | { readonly accepted: false; readonly reason: "key_full" | "queue_full" };

type Lane = { pending: number; tail: Promise<void> };

export class KeyedSerialQueue {
  private readonly lanes = new Map<string, Lane>();
  private pendingTotal = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly limits: KeyedSerialQueueLimits) {
    if (!(limits.pendingPerKeyMax >= 1 && limits.pendingTotalMax >= limits.pendingPerKeyMax)) {
      throw new RangeError("KeyedSerialQueue needs 1 <= pendingPerKeyMax <= pendingTotalMax");
    }
  }

  get pending(): number {
    return this.pendingTotal;
  }

  /** Tasks queued or running for `key`. */
  pendingFor(key: string): number {
    return this.lanes.get(key)?.pending ?? 0;
  }

  /**
   * Queues `task` behind the tasks already queued for `key`. Synchronous, so callers that enqueue in
   * arrival order get execution in arrival order. A task that throws rejects its own result only.
   */
  enqueue<T>(key: string, task: () => Promise<T>): EnqueueResult<T> {
    if (this.pendingTotal >= this.limits.pendingTotalMax) return { accepted: false, reason: "queue_full" };
    let lane = this.lanes.get(key);
    if (lane !== undefined && lane.pending >= this.limits.pendingPerKeyMax) return { accepted: false, reason: "key_full" };
    if (lane === undefined) {
      lane = { pending: 0, tail: Promise.resolve() };
      this.lanes.set(key, lane);
    }
    const current = lane;
    current.pending += 1;
    this.pendingTotal += 1;
    const result = current.tail.then(task);
    current.tail = result.then(
      () => this.settle(key, current),
      () => this.settle(key, current),
    );
    return { accepted: true, result };
  }

  /** Resolves once no task is queued or running (tasks enqueued meanwhile are waited for too). */
  whenIdle(): Promise<void> {
    if (this.pendingTotal === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private settle(key: string, lane: Lane): void {
    lane.pending -= 1;
    this.pendingTotal -= 1;
    if (lane.pending === 0 && this.lanes.get(key) === lane) this.lanes.delete(key);
    if (this.pendingTotal === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }
}
