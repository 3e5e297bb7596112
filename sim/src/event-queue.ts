// Virtual time: events run one at a time in (time, order of scheduling) order, and the clock jumps to each
// event's time. No real timer or I/O is involved, so a run depends on its seed alone.

type ScheduledEvent = { readonly atMs: number; readonly order: number; readonly action: () => void };

export class EventQueue {
  private nowValueMs = 0;
  private scheduledCount = 0;
  private executedCount = 0;
  /** A binary min-heap on (atMs, order). */
  private readonly heap: ScheduledEvent[] = [];

  get nowMs(): number {
    return this.nowValueMs;
  }

  /** Events run so far. */
  get executed(): number {
    return this.executedCount;
  }

  get pending(): number {
    return this.heap.length;
  }

  at(atMs: number, action: () => void): void {
    if (!(atMs >= this.nowValueMs)) throw new RangeError(`cannot schedule at ${atMs} ms, before now (${this.nowValueMs} ms)`);
    this.push({ atMs, order: this.scheduledCount++, action });
  }

  after(delayMs: number, action: () => void): void {
    this.at(this.nowValueMs + Math.max(0, delayMs), action);
  }

  /**
   * Runs every event due at or before `untilMs` (the clock then reads `untilMs`), or stops once
   * `eventsMax` events ran in this call, or when `stop()` says so after an event; returns why it stopped.
   */
  runUntil(untilMs: number, eventsMax: number, stop: () => boolean): "reached" | "stopped" | "budget" {
    let ran = 0;
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.atMs > untilMs) break;
      if (ran >= eventsMax) return "budget";
      this.pop();
      this.nowValueMs = next.atMs;
      next.action();
      ran++;
      this.executedCount++;
      if (stop()) return "stopped";
    }
    this.nowValueMs = Math.max(this.nowValueMs, untilMs);
    return "reached";
  }

  private push(event: ScheduledEvent): void {
    const heap = this.heap;
    heap.push(event);
    let index = heap.length - 1;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex];
      if (parent === undefined || !earlier(event, parent)) break;
      heap[index] = parent;
      heap[parentIndex] = event;
      index = parentIndex;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    // Sift the last event down from the root's hole.
    let index = 0;
    for (;;) {
      const leftIndex = 2 * index + 1;
      let childIndex = leftIndex;
      let child = heap[leftIndex];
      if (child === undefined) break;
      const right = heap[leftIndex + 1];
      if (right !== undefined && earlier(right, child)) {
        childIndex = leftIndex + 1;
        child = right;
      }
      if (!earlier(child, last)) break;
      heap[index] = child;
      index = childIndex;
    }
    heap[index] = last;
  }
}

function earlier(left: ScheduledEvent, right: ScheduledEvent): boolean {
  return left.atMs < right.atMs || (left.atMs === right.atMs && left.order < right.order);
}
