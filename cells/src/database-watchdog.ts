// Gives up the worker's lease while its database does not answer, and takes it back once it does. A
// worker that cannot reach Postgres cannot serve its keys, yet its heartbeats go on over NATS: without
// this, the ring keeps sending it every request for its keys, which time out, for as long as the
// database is away. Giving up the lease hands the keys to the other workers of the cell (whose database
// path may be fine: a network partition, a wedged pool); the probes go on, and the first that succeeds
// rejoins the ring (docs/decisions/0019). Pure logic: the probe, the lease and the timers are injected.
import type { ServiceLogger } from "@cellwire/cluster";

export type DatabaseWatchdogOptions = {
  /** One cheap query on a connection of its own; rejects (or times out) when the database does not answer. */
  readonly probe: () => Promise<void>;
  /** Deletes the lease and stops heartbeating. */
  readonly giveUpLease: () => Promise<void>;
  /** Puts the lease back and heartbeats again; rejects when that failed (tried again at the next probe). */
  readonly rejoin: () => Promise<void>;
  readonly monotonicNowMs: () => number;
  readonly setInterval: (ms: number, callback: () => void) => () => void;
  readonly logger: Pick<ServiceLogger, "info" | "warn">;
  readonly limits: {
    /** No successful probe for this long: the lease is given up. */
    readonly unreachableMs: number;
    readonly probeIntervalMs: number;
  };
};

export class DatabaseWatchdog {
  private lastAnsweredAtMs: number;
  private probing = false;
  /** A lease change (give up or rejoin) in flight: at most one at a time. */
  private changing = false;
  private change: Promise<void> = Promise.resolve();
  private gaveUp = false;
  private cancelTimer: (() => void) | undefined;

  constructor(private readonly options: DatabaseWatchdogOptions) {
    this.lastAnsweredAtMs = options.monotonicNowMs();
  }

  /** How long ago the last successful probe started (readiness: a database that answered lately). */
  answeredAgoMs(): number {
    return this.options.monotonicNowMs() - this.lastAnsweredAtMs;
  }

  /** False from the moment the lease is being given up until it is back: the worker then serves nothing. */
  get serving(): boolean {
    return !this.gaveUp;
  }

  start(): void {
    this.lastAnsweredAtMs = this.options.monotonicNowMs();
    this.cancelTimer ??= this.options.setInterval(this.options.limits.probeIntervalMs, () => this.tick());
  }

  /** Stops probing; resolves once a lease change in flight has landed, so none follows the caller's own. */
  async stop(): Promise<void> {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    await this.change;
  }

  /** One period: check the bound, then probe unless a probe is still waiting (at most one in flight). */
  tick(): void {
    const nowMs = this.options.monotonicNowMs();
    if (!this.gaveUp && nowMs - this.lastAnsweredAtMs > this.options.limits.unreachableMs) this.giveUp(nowMs);
    if (this.probing) return;
    this.probing = true;
    const startedAtMs = nowMs;
    this.options.probe().then(
      () => {
        this.probing = false;
        // The start of the probe: the database answered at least then.
        this.lastAnsweredAtMs = Math.max(this.lastAnsweredAtMs, startedAtMs);
        if (this.gaveUp && this.cancelTimer !== undefined) this.rejoin();
      },
      () => {
        this.probing = false;
      },
    );
  }

  private giveUp(nowMs: number): void {
    if (this.changing) return;
    this.gaveUp = true;
    this.changing = true;
    this.options.logger.warn(
      `the cell database answered nothing for ${nowMs - this.lastAnsweredAtMs} ms (WORKER_DATABASE_UNREACHABLE_MS=${this.options.limits.unreachableMs}): giving up the lease until it answers`,
    );
    this.change = this.options.giveUpLease().then(
      () => {
        this.changing = false;
      },
      (error: unknown) => {
        // The lease then lapses on its own: nobody renews it.
        this.changing = false;
        this.options.logger.warn(`deleting the lease failed (${String(error)}); it lapses unrenewed`);
      },
    );
  }

  private rejoin(): void {
    if (this.changing) return;
    this.changing = true;
    this.change = this.options.rejoin().then(
      () => {
        this.changing = false;
        this.gaveUp = false;
        this.options.logger.info("the cell database answers again: the worker rejoined its cell's ring");
      },
      (error: unknown) => {
        this.changing = false;
        this.options.logger.warn(`rejoining the ring failed (${String(error)}); trying again at the next probe`);
      },
    );
  }
}
