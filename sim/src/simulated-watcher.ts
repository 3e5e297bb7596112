// MembershipWatcher (membership.ts) over the simulated bucket: the same steps in the same order, its
// decisions taken by the same MembershipCore. start(): status, then the ready deadline (or an immediate
// end of the replay on an empty bucket), then the watch and the expiry timer. An expired lease is deleted
// with compare-and-set on the revision seen; when that fails, a get, and a plain delete only if the key
// has no entry at all (max_age dropped it).
import { MembershipCore, type MembershipSnapshot, type MembershipWatchEntry } from "@cellwire/cluster";
import type { Interval, SimulatedProcess } from "./simulated-process.ts";
import type { World } from "./world.ts";

export type WatcherHooks = {
  /** start() resolved: the watch is open. */
  readonly started: () => void;
  /** `ready` resolved: the replay is over, or the ready deadline passed. */
  readonly ready: () => void;
  /** start() rejected: the process cannot start. */
  readonly failed: (why: string) => void;
  readonly published: (snapshot: MembershipSnapshot) => void;
};

export class SimulatedWatcher {
  readonly core: MembershipCore;
  private stopped = false;
  private expiryTimer: Interval | undefined;
  private watchId: number | undefined;

  constructor(
    private readonly world: World,
    private readonly process: SimulatedProcess,
    private readonly hooks: WatcherHooks,
  ) {
    this.core = new MembershipCore(world.settings.cellId);
  }

  get snapshot(): MembershipSnapshot {
    return this.core.snapshot;
  }

  start(): void {
    const { settings } = this.world;
    this.process.requestBucket(
      (bucket) => bucket.status(),
      (status) => {
        const initialRevision = status.messages === 0 ? 0 : status.lastRevision;
        this.note(`bucket status: ${status.messages} entries, last revision ${status.lastRevision}`);
        // As MembershipWatcher: only the watch ends the replay; `ready` only stops the waiting.
        if (initialRevision === 0) {
          this.hooks.ready();
        } else {
          this.process.after(settings.readyDeadlineMs, () => {
            if (this.stopped || !this.core.replaying) return;
            this.note(`not read up to revision ${initialRevision} within ${settings.readyDeadlineMs} ms; the ring stays empty until it is`);
            this.hooks.ready();
          });
        }
        const link = this.world.network.openWatchLink(this.process, (entry) => this.onEntry(entry));
        const incarnation = this.process.incarnation;
        this.process.requestBucket(
          (bucket) => {
            const watch = bucket.watch(this.process.id, (entry) => link.send(entry));
            this.note(`watch opened in the bucket at revision ${watch.fromRevision}, replaying ${watch.replayed} entries`);
            this.watchId = watch.watchId;
            // The request outlived its watcher (stopped, or its process died): the server drops such a consumer.
            if (this.stopped || this.process.incarnation !== incarnation) bucket.unwatch(watch.watchId);
            return watch;
          },
          () => {
            this.expiryTimer = this.process.every(settings.expiryCheckIntervalMs, () => this.deleteExpiredLeases());
            this.hooks.started();
          },
          (why) => this.hooks.failed(`watch: ${why}`),
        );
      },
      (why) => this.hooks.failed(`status: ${why}`),
    );
  }

  stop(): void {
    this.stopped = true;
    if (this.expiryTimer !== undefined) this.expiryTimer.cancelled = true;
    if (this.watchId !== undefined) this.world.bucket.unwatch(this.watchId);
  }

  /** MembershipWatcher.connectionLost: the process noticed its NATS connection drop. */
  connectionLost(): void {
    this.core.connectionLost();
  }

  /** MembershipWatcher.connectionRestored: every lease counts from now. */
  connectionRestored(): void {
    this.core.connectionRestored(this.process.monotonicNowMs());
  }

  private onEntry(entry: MembershipWatchEntry): void {
    if (this.stopped) return;
    const outcome = this.core.applyEntry(entry, this.process.monotonicNowMs(), this.process.wallNowMs());
    if (outcome.malformed) this.note(`ignoring malformed lease ${entry.key}`);
    if (outcome.change === "replay-ended") this.afterReplay();
    else if (outcome.change === "published") this.hooks.published(this.core.snapshot);
  }

  private afterReplay(): void {
    this.hooks.published(this.core.snapshot);
    this.hooks.ready();
  }

  private deleteExpiredLeases(): void {
    if (this.stopped) return;
    for (const { workerId, revision } of this.core.beginExpiredDeletes(this.process.monotonicNowMs())) {
      this.deleteLease(workerId, revision, () => this.core.endDelete(workerId));
    }
  }

  private deleteLease(workerId: string, revision: number, settled: () => void): void {
    const key = `worker.${workerId}`;
    const afterFailedDelete = (): void =>
      this.process.requestBucket(
        (bucket) => bucket.get(key),
        (current) => {
          if (current === null && !this.stopped) {
            this.note(`lease of ${workerId} has no entry (max_age); deleting it without compare-and-set`);
            this.process.requestBucket((bucket) => bucket.delete(key), settled, settled);
          } else {
            settled();
          }
        },
        settled,
      );
    this.process.requestBucket(
      (bucket) => bucket.delete(key, revision),
      (result) => {
        if (!result.ok) {
          afterFailedDelete();
          return;
        }
        this.note(`lease of ${workerId} expired; deleted it at revision ${result.revision} (last renewed at ${revision})`);
        settled();
      },
      afterFailedDelete,
    );
  }

  private note(text: string): void {
    this.world.trace.record(this.world.queue.nowMs, `${this.process.id}: ${text}`);
  }
}
