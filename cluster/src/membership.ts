// A cell's membership in NATS JetStream KV (ZooKeeper's part in the Messages design): workers hold
// heartbeated leases; edges and workers watch the bucket and recompute the ring.
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { membershipBucket } from "@cellwire/protocol";
import { MembershipCore, watchQuiet, watchStalled, type MembershipSnapshot } from "./membership-core.ts";
import { sleep } from "./sleep.ts";
import { UnavailableError } from "./errors.ts";
import type { Logger } from "./log-lines.ts";

export type { MembershipSnapshot } from "./membership-core.ts";

export type Clock = { readonly monotonicNowMs: () => number; readonly wallNowMs: () => number };
export const systemClock: Clock = { monotonicNowMs: () => performance.now(), wallNowMs: () => Date.now() };

/**
 * Opens (creating if needed) the membership bucket of a cell. Entries older than ten leases are dropped by
 * the bucket's max_age, so leases of workers that died without deleting theirs do not pile up. `replicas`
 * (1, or 3 on a NATS cluster so the bucket outlives one node) applies only when this call creates it.
 */
export async function openMembershipBucket(
  connection: NatsConnection,
  namespace: string,
  cellId: string,
  leaseMs: number,
  replicas = 1,
): Promise<KV> {
  const manager = new Kvm(connection);
  const name = membershipBucket(namespace, cellId);
  // A NATS cluster that has just started, or is electing its JetStream meta leader, answers no JetStream
  // request for a moment ("jetstream is not enabled"), and a create sent meanwhile may go unanswered, so
  // that the open after it finds no stream: a worker started then waits and creates again, within a bound.
  const deadlineAt = performance.now() + bucketReadyWaitMs;
  for (;;) {
    try {
      const bucket = await createOrOpenBucket(manager, name, { history: 1, ttl: leaseMs * 10, replicas });
      await untilBucketHasLeader(bucket, name, deadlineAt);
      return bucket;
    } catch (error) {
      if (!(isJetStreamNotAnswering(error) || isStreamNotFound(error)) || performance.now() >= deadlineAt) throw error;
      await sleep(jetStreamRetryDelayMs);
    }
  }
}

async function createOrOpenBucket(manager: Kvm, name: string, options: { history: number; ttl: number; replicas: number }): Promise<KV> {
  try {
    return await manager.create(name, options);
  } catch (error) {
    // No JetStream answered: the caller tries again (an open would not look for the stream until used).
    if (isJetStreamNotAnswering(error)) throw error;
    // The bucket exists with another max_age or replica count (other settings), or a twin's create of it
    // is in flight (NATS 2.9 may leave one of two concurrent creates unanswered): use it as it is.
    try {
      return await manager.open(name);
    } catch {
      throw error;
    }
  }
}

/** nats.js's JetStreamNotEnabled (not exported): a JetStream API request that no server answered. */
function isJetStreamNotAnswering(error: unknown): boolean {
  return error instanceof Error && error.name === "JetStreamNotEnabled";
}

/** The bucket opened has no stream (its create was lost): create it again rather than wait for a leader. */
function isStreamNotFound(error: unknown): boolean {
  return error instanceof Error && error.name === "StreamNotFoundError";
}

const jetStreamRetryDelayMs = 200;

/** How long opening a bucket may wait, in all, for JetStream to answer and the bucket's stream to elect a leader. */
const bucketReadyWaitMs = 10_000;
const bucketLeaderPollIntervalMs = 50;

/**
 * A replicated bucket opened while a twin worker creates it is answered for before its replicas have
 * elected a leader, and a put then finds no responder ("jetstream is not enabled"): wait for the leader.
 */
async function untilBucketHasLeader(bucket: KV, name: string, deadlineAt: number): Promise<void> {
  let lastProblem: unknown;
  while (performance.now() < deadlineAt) {
    try {
      const status = await bucket.status();
      if (status.replicas <= 1 || (status.streamInfo.cluster?.leader ?? "") !== "") return;
    } catch (error) {
      if (isStreamNotFound(error)) throw error;
      lastProblem = error;
    }
    await sleep(bucketLeaderPollIntervalMs);
  }
  throw new UnavailableError("cell_unavailable", `membership bucket ${name} had no stream leader within ${bucketReadyWaitMs} ms`, {
    cause: lastProblem,
  });
}

/**
 * Opens a cell's membership bucket without creating it: readers (edges) must not create a bucket with
 * their own settings before the cell's workers do. Fails when the cell has never started.
 */
export async function openExistingMembershipBucket(connection: NatsConnection, namespace: string, cellId: string): Promise<KV> {
  const bucket = await new Kvm(connection).open(membershipBucket(namespace, cellId));
  await bucket.status();
  return bucket;
}

export async function destroyMembershipBucket(connection: NatsConnection, namespace: string, cellId: string): Promise<void> {
  const manager = new Kvm(connection);
  const name = membershipBucket(namespace, cellId);
  const kv = await manager.open(name);
  await kv.destroy();
}

/** What a MembershipWatcher uses of a KV bucket: narrow, so that a test can make its watch stall. */
export type WatchedBucket = Pick<KV, "status" | "watch" | "get" | "delete">;
type WatchIterator = Awaited<ReturnType<KV["watch"]>>;

/**
 * Watches a cell's membership bucket and keeps the ring of its members. `ready` resolves once the
 * bucket's current contents have been read (or after readyDeadlineMs, whichever comes first); until then
 * the snapshot is the empty ring of epoch 0, so nobody acts on a half-read bucket.
 *
 * A lease that nobody renewed within its leaseMs is deleted in the bucket by the watchers that notice it,
 * each with compare-and-set on the revision it saw: one wins, and the removal gets a revision (the new
 * epoch) of its own; a holder that renewed meanwhile makes every such delete fail harmlessly.
 *
 * Every stallCheckIntervalMs (default: four expiry checks, which callers size at a lease) the watcher
 * asks the bucket for its last revision; a watch that saw nothing for longer than the longest lease while
 * the bucket moved past the last applied revision has stalled (see watchStalled), and is replaced by a
 * watch from that revision + 1, whose first entries the core takes as a catch-up (see
 * MembershipCore.beginCatchUp): it keeps one value per key, so the epoch may come out higher than that of
 * a watcher that saw every change, as for a watcher that starts late, never lower.
 */
export class MembershipWatcher {
  private readonly core: MembershipCore;
  private readonly listeners = new Set<(snapshot: MembershipSnapshot) => void>();
  private leaseExpired: (workerId: string) => void = () => {};
  private expiryTimer: ReturnType<typeof setInterval> | undefined;
  private stallTimer: ReturnType<typeof setInterval> | undefined;
  private readyTimer: ReturnType<typeof setTimeout> | undefined;
  private stopWatching: (() => void) | undefined;
  private stopped = false;
  /** Entries of older watches than this one are dropped: a replaced watch may still hand over queued ones. */
  private watchGeneration = 0;
  private lastAppliedRevision = 0;
  private lastEntryAtMs = 0;
  /** At most one stall check (and so one re-watch) in flight. */
  private checkingStall = false;
  /** Why this watcher's ring is known or likely to be behind the bucket, until a re-watch succeeds (see suspectStale). */
  private staleSuspected: string | undefined;
  private lastSuspectedRewatchAtMs = Number.NEGATIVE_INFINITY;
  private resolveReady: () => void = () => {};
  readonly ready: Promise<void>;

  constructor(
    private readonly bucket: WatchedBucket,
    private readonly cellId: string,
    private readonly expiryCheckIntervalMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly readyDeadlineMs = 2000,
    private readonly stallCheckIntervalMs = expiryCheckIntervalMs * 4,
    /**
     * Whether this watcher deletes the expired leases it notices. Workers do; an edge's or the admin's
     * watcher does not: their NATS users may read the bucket but not write it (docs/decisions/0015), and
     * the cell's own workers, which always watch it, delete what expires.
     */
    private readonly deletesExpiredLeases = true,
  ) {
    this.ready = new Promise((resolve) => {
      this.resolveReady = resolve;
    });
    this.core = new MembershipCore(cellId);
  }

  get snapshot(): MembershipSnapshot {
    return this.core.snapshot;
  }

  onChange(listener: (snapshot: MembershipSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Told when this watcher deleted an expired lease: only the one whose compare-and-set wins, so once per expiry. */
  onLeaseExpired(listener: (workerId: string) => void): void {
    this.leaseExpired = listener;
  }

  async start(): Promise<void> {
    const status = await withDeadline(this.bucket.status(), watchSetupDeadlineMs, "status");
    const state = status.streamInfo.state;
    const initialRevision = state.messages === 0 ? 0 : state.last_seq;
    // Only the watch may end the replay (when it reports nothing left to deliver): ending it early would
    // publish a partial ring under an epoch that names another ring (found by the simulation, seeds 360
    // and 547). Until then the snapshot is the empty ring of epoch 0; `ready` only stops the waiting.
    if (initialRevision === 0) {
      this.resolveReady();
    } else {
      this.readyTimer = setTimeout(() => {
        this.logger.warn(
          `membership of cell ${this.cellId} not read up to revision ${initialRevision} within ${this.readyDeadlineMs} ms; the ring stays empty until it is`,
        );
        this.resolveReady();
      }, this.readyDeadlineMs);
    }
    // A watch the NATS client never sets up would leave every request for this cell waiting on start():
    // past the deadline start() fails, and its caller (a router) starts another watcher on the next request.
    let iterator: WatchIterator;
    try {
      iterator = await this.watchWithDeadline({ key: "worker.>" });
    } catch (error) {
      if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
      throw error;
    }
    this.stopWatching = () => iterator.stop();
    this.lastEntryAtMs = this.clock.monotonicNowMs();
    this.consume(iterator, this.watchGeneration, false);
    if (this.deletesExpiredLeases) this.expiryTimer = setInterval(() => this.deleteExpiredLeases(), this.expiryCheckIntervalMs);
    this.stallTimer = setInterval(() => void this.checkStall(), this.stallCheckIntervalMs);
  }

  /** Feeds the entries of one watch to the core until the watch ends or a newer one replaces it. */
  private consume(iterator: WatchIterator, generation: number, resumed: boolean): void {
    void (async () => {
      for await (const entry of iterator) {
        if (generation !== this.watchGeneration) break;
        this.lastEntryAtMs = this.clock.monotonicNowMs();
        // Caught up: nothing written before this entry is still to come. The server's pending count alone
        // can stay above 0 for good while leases renew faster than a loaded consumer delivers (seen on
        // nats-server 2.9: a replay that never ended, so a router's ring stayed empty for minutes); the
        // client also marks the last of the entries pending when the watch was set up (isUpdate), which
        // ends the replay as surely.
        const delta = entry.delta === 0 || entry.isUpdate ? 0 : Math.max(1, entry.delta ?? 1);
        // A resumed watch may start with entries the watch it replaced delivered while it was being set up.
        if (resumed && entry.revision <= this.lastAppliedRevision) {
          // Caught up all the same: nothing written up to this entry is still to come.
          if (delta === 0 && this.core.endReplay()) this.afterReplay();
          else if (delta === 0 && this.core.endCatchUp()) this.notify();
          continue;
        }
        this.lastAppliedRevision = Math.max(this.lastAppliedRevision, entry.revision);
        const outcome = this.core.applyEntry(
          {
            key: entry.key,
            operation: entry.operation,
            value: entry.value,
            revision: entry.revision,
            delta,
            // The NATS client marks a resumed watch's first entries as a replay, which the core would date
            // by the server's clock; once the core's replay is over they are a catch-up, seen now.
            isUpdate: resumed && !this.core.replaying ? true : entry.isUpdate,
            createdAtWallMs: entry.created.getTime(),
          },
          this.clock.monotonicNowMs(),
          this.clock.wallNowMs(),
        );
        if (outcome.malformed) this.logger.warn(`ignoring malformed lease ${entry.key} in cell ${this.cellId}`);
        if (outcome.change === "replay-ended") this.afterReplay();
        else if (outcome.change === "published") this.notify();
      }
    })().catch((error: unknown) => this.logger.warn(`membership watch of cell ${this.cellId} ended: ${String(error)}`));
  }

  /**
   * The NATS connection dropped: leases stop expiring here until it is back (MembershipCore.connectionLost).
   * The watch itself is left alone: nats.js resubscribes it, and the stall check judges it once it is back.
   */
  connectionLost(): void {
    this.core.connectionLost();
  }

  /**
   * The NATS connection is back. Every lease counts from now (MembershipCore.connectionRestored), and so
   * does the watch's silence: every holder renews at its reconnect, so a live watch delivers within a
   * lease, while a stall check sent now, with JetStream still recovering, could wait out its deadline for
   * a reply the restart lost.
   */
  connectionRestored(): void {
    const nowMs = this.clock.monotonicNowMs();
    this.core.connectionRestored(nowMs);
    this.lastEntryAtMs = Math.max(this.lastEntryAtMs, nowMs);
  }

  /**
   * This process learnt that its ring is behind the bucket: the database refused a write as fenced, so a
   * later ring exists that this watch has not delivered. It watches again from the last applied revision
   * + 1 at once, without asking the bucket first, at most once per stall check interval; one that fails is
   * tried again by the next stall check. (A watch whose consumer a NATS restart left stalled behind a lost
   * flow-control reply stays silent until the server's next 30 s heartbeat; nothing else tells the worker.)
   */
  suspectStale(reason: string): void {
    this.staleSuspected ??= reason;
    void this.checkStall();
  }

  /**
   * Watches again from the last applied revision + 1 when the current watch has stalled (see watchStalled),
   * or is suspected stale (suspectStale).
   */
  private async checkStall(): Promise<void> {
    if (this.stopped || this.checkingStall) return;
    if (this.staleSuspected !== undefined) {
      await this.rewatchSuspected(this.staleSuspected);
      return;
    }
    // A watch that delivered within the quiet limit has not stalled: asking the bucket would only cost a
    // JetStream API call (STREAM.INFO), its reply and an audit advisory per watcher and check.
    const quietLimitMs = this.core.longestLeaseMs ?? this.stallCheckIntervalMs;
    if (!watchQuiet({ monotonicNowMs: this.clock.monotonicNowMs(), lastEntryAtMs: this.lastEntryAtMs, quietLimitMs })) return;
    this.checkingStall = true;
    try {
      let bucketLastRevision: number;
      try {
        const state = (await withDeadline(this.bucket.status(), watchSetupDeadlineMs, "status")).streamInfo.state;
        // max_age drops the oldest entries first, so the last revision is still stored unless none is: a
        // bucket emptied by max_age has nothing left to deliver, whatever its last revision.
        bucketLastRevision = state.messages === 0 ? 0 : state.last_seq;
      } catch (error) {
        // The node that answers for the bucket is down or electing: the next check asks again.
        this.logger.warn(`membership stall check of cell ${this.cellId} could not read the bucket: ${String(error)}`);
        return;
      }
      const progress = {
        monotonicNowMs: this.clock.monotonicNowMs(),
        lastEntryAtMs: this.lastEntryAtMs,
        quietLimitMs,
        lastAppliedRevision: this.lastAppliedRevision,
        bucketLastRevision,
      };
      if (this.stopped || !watchStalled(progress)) return;
      const quietForMs = progress.monotonicNowMs - progress.lastEntryAtMs;
      await this.rewatch(`delivered nothing for ${Math.round(quietForMs)} ms while the bucket reached revision ${bucketLastRevision}`);
    } finally {
      this.checkingStall = false;
    }
  }

  private async rewatchSuspected(reason: string): Promise<void> {
    const nowMs = this.clock.monotonicNowMs();
    if (nowMs - this.lastSuspectedRewatchAtMs < this.stallCheckIntervalMs) return;
    this.lastSuspectedRewatchAtMs = nowMs;
    this.checkingStall = true;
    try {
      if (await this.rewatch(`is behind the cell: ${reason}`)) this.staleSuspected = undefined;
    } finally {
      this.checkingStall = false;
    }
  }

  /** True once a new watch from the last applied revision + 1 replaced the current one. */
  private async rewatch(why: string): Promise<boolean> {
    const resumeFromRevision = this.lastAppliedRevision + 1;
    this.logger.warn(`membership watch of cell ${this.cellId} ${why}; watching again from revision ${resumeFromRevision}`);
    let iterator: WatchIterator;
    // The new watch is set up before the old one stops, so a failure here leaves the old one running.
    try {
      iterator = await this.watchWithDeadline({ key: "worker.>", resumeFromRevision });
    } catch (error) {
      this.logger.warn(`could not watch the membership of cell ${this.cellId} again: ${String(error)}`);
      return false;
    }
    if (this.stopped) {
      iterator.stop();
      return false;
    }
    this.watchGeneration += 1;
    const stopPrevious = this.stopWatching;
    this.stopWatching = () => iterator.stop();
    stopPrevious?.();
    this.lastEntryAtMs = this.clock.monotonicNowMs();
    this.core.beginCatchUp();
    this.consume(iterator, this.watchGeneration, true);
    return true;
  }

  /** A watch of the bucket, or a rejection past watchSetupDeadlineMs; a watch set up after that is stopped unused. */
  private async watchWithDeadline(options: Parameters<WatchedBucket["watch"]>[0]): Promise<WatchIterator> {
    const pending = this.bucket.watch(options);
    try {
      return await withDeadline(pending, watchSetupDeadlineMs, "watch");
    } catch (error) {
      pending.then(
        (late) => late.stop(),
        () => undefined,
      );
      throw error;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.expiryTimer !== undefined) clearInterval(this.expiryTimer);
    if (this.stallTimer !== undefined) clearInterval(this.stallTimer);
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    this.stopWatching?.();
    this.resolveReady();
  }

  /** The replay just ended in the core, which published the first snapshot. */
  private afterReplay(): void {
    if (this.readyTimer !== undefined) clearTimeout(this.readyTimer);
    this.notify();
    this.resolveReady();
  }

  private deleteExpiredLeases(): void {
    if (this.stopped) return;
    for (const { workerId, revision } of this.core.beginExpiredDeletes(this.clock.monotonicNowMs())) {
      void this.deleteLease(workerId, revision).finally(() => this.core.endDelete(workerId));
    }
  }

  /** Deletes an expired lease if it is still at `revision`; the watch then removes it from every ring. */
  private async deleteLease(workerId: string, revision: number): Promise<void> {
    // Members entered the view only under their own key (checked on each put), so this is that key.
    const key = `worker.${workerId}`;
    try {
      await this.bucket.delete(key, { previousSeq: revision });
      this.logger.info(`lease of ${workerId} in cell ${this.cellId} expired; deleted it (last renewed at revision ${revision})`);
      this.leaseExpired(workerId);
      return;
    } catch {
      // Most often a newer revision exists (the holder renewed, or another watcher deleted it first) and
      // reaches this watcher through the watch; otherwise the next expiry check tries again.
    }
    try {
      const current = await this.bucket.get(key);
      // The bucket's max_age dropped the entry without any event (every watcher failed to delete it for ten
      // leases): only a new delete marker removes the member everywhere. Should the holder put its lease
      // between the get and this delete, its next renewal brings it back.
      if (current === null && !this.stopped) await this.bucket.delete(key);
    } catch (error) {
      this.logger.warn(`could not delete the expired lease of ${workerId} in cell ${this.cellId}: ${String(error)}`);
    }
  }

  private notify(): void {
    const snapshot = this.core.snapshot;
    for (const listener of this.listeners) listener(snapshot);
  }
}

/**
 * Tells membership watchers when `connection` drops and comes back (MembershipWatcher.connectionLost and
 * connectionRestored, docs/decisions/0041). `watchers` is read at each drop and return, so watchers
 * started since are told too. The loop ends with the connection, or at the first status after `stopped()`
 * says so.
 */
export function watchersFollowConnection(
  connection: Pick<NatsConnection, "status">,
  watchers: () => Iterable<MembershipWatcher | Promise<MembershipWatcher>>,
  stopped: () => boolean = () => false,
): void {
  void (async () => {
    for await (const status of connection.status()) {
      if (stopped()) break;
      if (status.type !== "disconnect" && status.type !== "reconnect") continue;
      for (const watcher of watchers()) {
        Promise.resolve(watcher).then(
          (started) => (status.type === "disconnect" ? started.connectionLost() : started.connectionRestored()),
          () => undefined,
        );
      }
    }
  })();
}

/** How long setting up a watch, or reading the bucket's status, may take before the attempt is given up. */
const watchSetupDeadlineMs = 10_000;

/**
 * Rejects when `work` has not settled within `deadlineMs`, so that a stall check never waits forever on a
 * request the NATS client keeps pending (the check runs one at a time).
 */
function withDeadline<T>(work: Promise<T>, deadlineMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnavailableError("cell_unavailable", `membership ${what} took over ${deadlineMs} ms`)), deadlineMs);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
