// A simulated process: it runs the actions delivered to it (timers, messages) one at a time, like a
// Node event loop. Paused (SIGSTOP), it runs nothing and keeps what arrives, in order, for when it
// resumes; killed, it forgets everything, and what was meant for that incarnation is dropped. Its
// monotonic clock is the virtual clock; its wall clock may be off by a fixed skew.
import type { SimulatedBucket } from "./simulated-bucket.ts";
import type { World } from "./world.ts";

/** A repeating timer (setInterval): after a pause it fires once, then keeps its interval from there. */
export type Interval = { cancelled: boolean };

export class SimulatedProcess {
  private incarnationValue = 0;
  private aliveValue = false;
  private pausedValue = false;
  private backlog: (() => void)[] = [];

  constructor(
    readonly id: string,
    protected readonly world: World,
    private readonly wallClockSkewMs: number,
  ) {}

  get incarnation(): number {
    return this.incarnationValue;
  }

  get alive(): boolean {
    return this.aliveValue;
  }

  get paused(): boolean {
    return this.pausedValue;
  }

  monotonicNowMs(): number {
    return this.world.queue.nowMs;
  }

  wallNowMs(): number {
    return this.world.queue.nowMs + this.wallClockSkewMs;
  }

  /** Runs `action` in this process, unless the incarnation it was meant for is gone; held while paused. */
  deliver(incarnation: number, action: () => void): void {
    if (!this.aliveValue || incarnation !== this.incarnationValue) return;
    if (this.pausedValue) {
      if (this.backlog.length >= this.world.settings.pausedBacklogMax) {
        throw new Error(`more than ${this.world.settings.pausedBacklogMax} actions held for paused ${this.id}`);
      }
      this.backlog.push(action);
      return;
    }
    action();
  }

  /** A timer of this incarnation (setTimeout). */
  after(delayMs: number, action: () => void): void {
    const incarnation = this.incarnationValue;
    this.world.queue.after(delayMs, () => this.deliver(incarnation, action));
  }

  every(intervalMs: number, action: () => void): Interval {
    const interval: Interval = { cancelled: false };
    const tick = (): void => {
      if (interval.cancelled) return;
      this.after(intervalMs, tick);
      action();
    };
    this.after(intervalMs, tick);
    return interval;
  }

  /**
   * Sends one request to the bucket, where `operation` runs when (if) it arrives; `onReply` gets its
   * result if the reply comes back within the request timeout, `onFailure` is called otherwise. Exactly
   * one of them is called, in this incarnation, unless it dies first.
   */
  requestBucket<T>(operation: (bucket: SimulatedBucket) => T, onReply: (result: T) => void, onFailure: (why: string) => void): void {
    const { queue, network, bucket, settings } = this.world;
    const incarnation = this.incarnationValue;
    let settled = false;
    this.after(settings.bucketRequestTimeoutMs, () => {
      if (settled) return;
      settled = true;
      onFailure(`no reply within ${settings.bucketRequestTimeoutMs} ms`);
    });
    const requestDelayMs = network.bucketMessageDelayMs(this.id);
    if (requestDelayMs === undefined) return;
    queue.after(requestDelayMs, () => {
      const result = operation(bucket);
      const replyDelayMs = network.bucketMessageDelayMs(this.id);
      if (replyDelayMs === undefined) return;
      queue.after(replyDelayMs, () =>
        this.deliver(incarnation, () => {
          if (settled) return;
          settled = true;
          onReply(result);
        }),
      );
    });
  }

  protected boot(): void {
    this.incarnationValue++;
    this.aliveValue = true;
    this.pausedValue = false;
    this.backlog = [];
  }

  /** The process is gone: its timers, messages in flight to it and watches die with it. */
  protected kill(): void {
    this.incarnationValue++;
    this.aliveValue = false;
    this.pausedValue = false;
    this.backlog = [];
    this.world.bucket.unwatchAll(this.id);
    this.world.network.closeLinks(this.id);
  }

  pause(): void {
    if (this.aliveValue) this.pausedValue = true;
  }

  /** Runs what arrived while paused, in arrival order, at the moment of resuming. */
  resume(): void {
    if (!this.pausedValue) return;
    this.pausedValue = false;
    const backlog = this.backlog;
    this.backlog = [];
    for (const [index, action] of backlog.entries()) {
      // An action may pause or kill the process again: the rest waits, or dies, accordingly.
      if (!this.aliveValue) return;
      if (this.pausedValue) {
        this.backlog = [...backlog.slice(index), ...this.backlog];
        return;
      }
      action();
    }
  }
}
