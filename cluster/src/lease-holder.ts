// A worker's lease in its cell's membership bucket: written at start, renewed every heartbeat (at once after
// a NATS outage), deleted at stop; held only while its last renewal is younger than the lease (LeaseTerm).
import type { KV } from "@nats-io/kv";
import { leaseKey, type WorkerLease } from "@cellwire/protocol";
import { LeaseTerm } from "./membership-core.ts";
import type { Clock } from "./membership.ts";
import { encodeJson } from "./nats-json.ts";
import type { Logger } from "./log-lines.ts";

/** What a LeaseHolder uses of a KV bucket: narrow, so that a test can hold a renewal in flight. */
export type LeaseBucket = Pick<KV, "put" | "delete">;

/** Holds one worker's lease: writes it, then every heartbeatIntervalMs; deletes it on stop. renewalEnded MUST NOT wait. */
export class LeaseHolder {
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly term: LeaseTerm;
  /** Every renewal not yet settled, the ones no longer waited for included: stop() waits for them all. */
  private readonly renewals = new Set<Promise<void>>();
  /** The renewal the ticks wait for, while it is younger than renewalWaitMs; later ones are started anyway. */
  private current: { readonly startedAtMs: number; readonly renewal: Promise<void> } | undefined;

  constructor(
    private readonly bucket: LeaseBucket,
    private readonly lease: WorkerLease,
    private readonly heartbeatIntervalMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly renewalEnded: (outcome: "renewed" | "failed") => void = () => {},
  ) {
    this.term = new LeaseTerm(lease.leaseMs);
  }

  async start(): Promise<void> {
    await this.renew();
    this.timer = setInterval(() => this.renewQuietly(), this.heartbeatIntervalMs);
  }

  /** True while the last successful renewal is younger than the lease: a worker serves only then. */
  holds(): boolean {
    return this.term.holds(this.clock.monotonicNowMs());
  }

  /**
   * The NATS connection is back after an outage: renews at once, without waiting for the next tick nor for
   * a renewal sent before or during the outage, whose reply may never come (seen: a put buffered across a
   * nats-server restart timed out after JetStream's 5 s, and the worker refused every request meanwhile
   * since its lease had lapsed; docs/decisions/0025).
   */
  connectionRestored(): void {
    if (this.timer === undefined) return;
    this.current = undefined;
    this.renewQuietly();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    // A renewal still in flight would put the lease back after the delete; a holder may stop and start
    // again (a worker that gives up its lease while its database is away), so they all land first.
    await Promise.all([...this.renewals]);
    try {
      await this.bucket.delete(leaseKey(this.lease.workerId));
    } catch (error) {
      this.logger.warn(`could not delete lease of ${this.lease.workerId}: ${String(error)}`);
    }
  }

  private async renew(): Promise<void> {
    const startedAtMs = this.clock.monotonicNowMs();
    await this.bucket.put(leaseKey(this.lease.workerId), encodeJson(this.lease));
    this.term.renewed(startedAtMs);
    this.renewalEnded("renewed");
  }

  /**
   * One renewal at a time while renewals answer; one that has not answered within half a lease is no
   * longer waited for (the next tick sends another, so a lost request costs half a lease, not the
   * client's timeout), with at most renewalsInFlightMax unanswered at once.
   */
  private renewQuietly(): void {
    const nowMs = this.clock.monotonicNowMs();
    if (this.current !== undefined && nowMs - this.current.startedAtMs < this.lease.leaseMs / 2) return;
    if (this.renewals.size >= renewalsInFlightMax) return;
    const renewal: Promise<void> = this.renew().then(
      () => undefined,
      (error: unknown) => {
        this.renewalEnded("failed");
        this.logger.warn(`lease renewal of ${this.lease.workerId} failed: ${String(error)}`);
      },
    );
    const current = { startedAtMs: nowMs, renewal };
    this.current = current;
    this.renewals.add(renewal);
    void renewal.finally(() => {
      this.renewals.delete(renewal);
      if (this.current === current) this.current = undefined;
    });
  }
}

/** Lease renewals unanswered at once, at most (each ends at the NATS client's request timeout). */
const renewalsInFlightMax = 4;
