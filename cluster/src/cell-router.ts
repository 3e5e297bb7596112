// The distributed logic client's routing half: finds the worker that owns a key on a cell's ring and
// sends it the request, retrying when the owner is unknown, silent or disowns the key. Every cell request
// is idempotent (sends dedupe on clientMessageId, creations on their derived ids), so a retry after a lost
// reply never makes a second effect.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  cellReply,
  cellRequestChannel,
  cellRequestKey,
  withBudget,
  type CellMailboxPageRequest,
  type CellReply,
  type CellRequest,
  type CellSendRequest,
} from "@cellwire/protocol";
import { UnavailableError } from "./errors.ts";
import type { Logger } from "./log-lines.ts";
import { MembershipWatcher, openExistingMembershipBucket, watchersFollowConnection, type Clock } from "./membership.ts";
import { requestJson } from "./nats-json.ts";
import { mailboxPageBatches, RequestBatcher, sendBatches } from "./request-batcher.ts";
import { backoffDelayMs, type BackoffPolicy } from "./backoff.ts";
import { leaseExpiryCheckIntervalMs } from "./membership-core.ts";
import { sleep as sleepRealTime } from "./sleep.ts";

export type CellRouterOptions = {
  readonly namespace: string;
  readonly leaseMs: number;
  readonly requestTimeoutMs: number;
  /** Attempts per request, the first included; each waits a jittered backoff before the next. */
  readonly attemptsMax: number;
  /**
   * Time one request may take over all its attempts. Set above the lease so that a request whose owner
   * died is answered by the successor once the dead owner's lease expires, not failed before. A cap: the
   * caller's deadline, when sooner, ends the request first (docs/decisions/0020).
   */
  readonly deadlineMs?: number;
  readonly retryBackoff: BackoffPolicy;
  /** Cells watched at once; past it the least recently used cell's watcher is stopped. */
  readonly watchedCellsMax: number;
  /**
   * Whether the router's watchers delete expired leases (default true, a worker's): an edge's and the
   * admin's set false, since their NATS users may not write membership buckets (docs/decisions/0015).
   */
  readonly deletesExpiredLeases?: boolean;
  /**
   * Watchers the caller already runs, by cell (a worker's of its own cell): routed with instead of a
   * second watch of the same bucket, and never stopped here. Every watcher costs a delivery per lease
   * renewal of its cell, so two in one process would pay twice for one ring.
   */
  readonly sharedWatchers?: ReadonlyMap<string, MembershipWatcher>;
  /**
   * A cell not routed to for this long has its watcher stopped (undefined: kept until watchedCellsMax
   * evicts it). For routers whose traffic to a cell comes in bursts (a worker's relays and migrations):
   * an idle watch still receives every lease renewal of the cell, and one set up again costs a few ms.
   */
  readonly watchIdleMs?: number;
};

export class CellRouter {
  private readonly watchers = new Map<string, Promise<MembershipWatcher>>();
  /** The caller's watchers (sharedWatchers), resolved once so that routing with them allocates nothing. */
  private readonly sharedWatchers = new Map<string, Promise<MembershipWatcher>>();
  /** When each watched cell was last routed to (monotonic ms), kept only for the idle sweep. */
  private readonly lastRoutedAtMs = new Map<string, number>();
  /** Attempts in flight per cell: the idle sweep leaves their watchers running. */
  private readonly requestsInFlight = new Map<string, number>();
  private idleSweeper: ReturnType<typeof setInterval> | undefined;
  private stopped = false;
  private readonly stopSharedListeners: Array<() => void> = [];
  private readonly ringListeners = new Set<(cellId: string) => void>();
  /** Sends to one worker within one event-loop turn travel in one NATS request (docs/decisions/0009). */
  private readonly sends: RequestBatcher<CellSendRequest>;
  /** So do mailbox pages: a turn of connects reads its pages in one request per worker (docs/decisions/0042). */
  private readonly pages: RequestBatcher<CellMailboxPageRequest>;

  constructor(
    private readonly connection: NatsConnection,
    private readonly options: CellRouterOptions,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly random: () => number = Math.random,
    private readonly sleep: (ms: number) => Promise<void> = sleepRealTime,
  ) {
    this.sends = new RequestBatcher(connection, sendBatches);
    this.pages = new RequestBatcher(connection, mailboxPageBatches);
    for (const [cellId, watcher] of options.sharedWatchers ?? []) {
      this.sharedWatchers.set(cellId, Promise.resolve(watcher));
      this.stopSharedListeners.push(
        watcher.onChange(() => {
          for (const listener of this.ringListeners) listener(cellId);
        }),
      );
    }
    const { watchIdleMs } = options;
    if (watchIdleMs !== undefined) {
      this.idleSweeper = setInterval(() => this.stopIdleWatchers(watchIdleMs), Math.max(1, Math.floor(watchIdleMs / 2)));
      this.idleSweeper.unref();
    }
    // This router's own watchers hear of the connection's drops and returns; shared ones from their owner.
    watchersFollowConnection(
      connection,
      () => this.watchers.values(),
      () => this.stopped,
    );
  }

  /** One attempt on the wire: sends and mailbox pages ride in their batch to the worker, the rest alone. */
  private attempt(subject: string, request: CellRequest, timeoutMs: number, traceparent: string | undefined): Promise<CellReply> {
    if (request.type === "cell.send") return this.sends.request(subject, request, timeoutMs);
    if (request.type === "cell.mailboxPage") return this.pages.request(subject, request, timeoutMs);
    return requestJson(this.connection, subject, withBudget(request, timeoutMs), cellReply, timeoutMs, "cell_unavailable", traceparent);
  }

  /**
   * Sends a request to the owner of its key in `cellId`; returns the owner's reply (errors included).
   * `callerDeadlineAtMs` (monotonic ms) is when the caller stops waiting: no attempt waits past it, and
   * each attempt tells the worker how much of it is left (budgetMs), so the worker does not start the
   * request after the caller gave up. `traceparent` (with tracing off) goes with every attempt in the
   * header the tracing path uses (docs/decisions/0037).
   */
  async request(cellId: string, request: CellRequest, callerDeadlineAtMs?: number, traceparent?: string): Promise<CellReply> {
    const key = cellRequestKey(request);
    const deadlineAtMs = Math.min(
      callerDeadlineAtMs ?? Number.POSITIVE_INFINITY,
      this.clock.monotonicNowMs() + (this.options.deadlineMs ?? Number.POSITIVE_INFINITY),
    );
    let lastError: unknown;
    for (let attempt = 0; attempt < this.options.attemptsMax; attempt++) {
      if (attempt === 0 && deadlineAtMs <= this.clock.monotonicNowMs()) {
        lastError = new UnavailableError("deadline_exceeded", `the caller's deadline passed before ${key} was sent to cell ${cellId}`);
        break;
      }
      if (attempt > 0) {
        const remainingMs = deadlineAtMs - this.clock.monotonicNowMs();
        if (remainingMs <= 0) break;
        await this.sleep(Math.min(remainingMs, backoffDelayMs(this.options.retryBackoff, attempt - 1, this.random)));
      }
      let watcher: MembershipWatcher;
      try {
        watcher = await this.watcher(cellId);
      } catch (error) {
        lastError = new UnavailableError("cell_unavailable", `the membership of cell ${cellId} cannot be read`, { cause: error });
        continue;
      }
      const releaseWatcher = this.holdWatcher(cellId);
      const { ring, requestSubjects } = watcher.snapshot;
      const owner = ring.ownerOf(key);
      // Each request kind goes to the owner's subject for its channel, the only one the owner serves it on.
      const subject = owner === undefined ? undefined : requestSubjects.get(owner)?.[cellRequestChannel(request.type)];
      if (subject === undefined) {
        lastError = new UnavailableError(
          "cell_unavailable",
          `cell ${cellId} has no live worker (ring of ${ring.size} at epoch ${watcher.snapshot.ringEpoch})`,
        );
        continue;
      }
      // A request sent just before its owner died is lost with it; rather than wait for the attempt's
      // timeout, the attempt ends as soon as the owner leaves the ring, and the next goes to the successor.
      let stopWatching: () => void = () => {};
      const ownerLeft = new Promise<"owner_left">((resolve) => {
        stopWatching = watcher.onChange((snapshot) => {
          if (owner !== undefined && !snapshot.subjects.has(owner)) resolve("owner_left");
        });
      });
      try {
        const remainingMs = deadlineAtMs - this.clock.monotonicNowMs();
        if (remainingMs <= 0) {
          // Spent finding the owner (reading a cell's membership for the first time).
          lastError ??= new UnavailableError("deadline_exceeded", `the caller's deadline passed before ${key} was sent to cell ${cellId}`);
          break;
        }
        const timeoutMs = Math.max(1, Math.min(this.options.requestTimeoutMs, remainingMs));
        // The worker is told how long this attempt waits (a batch of sends carries the shortest of them).
        const pending = this.attempt(subject, request, timeoutMs, traceparent);
        pending.catch(() => undefined);
        const reply = await Promise.race([pending, ownerLeft]);
        if (reply === "owner_left") {
          lastError = new UnavailableError("cell_unavailable", `worker ${owner ?? "?"} left cell ${cellId} while serving ${key}`);
          continue;
        }
        if (reply.type === "cell.error" && reply.code === "not_owner") {
          lastError = new UnavailableError("cell_unavailable", `worker ${owner} of cell ${cellId} disowned ${key}`);
          continue;
        }
        return reply;
      } catch (error) {
        if (!(error instanceof UnavailableError)) throw error;
        lastError = error;
      } finally {
        stopWatching();
        releaseWatcher();
      }
    }
    throw lastError instanceof UnavailableError
      ? lastError
      : new UnavailableError("cell_unavailable", `cell ${cellId} did not answer`, { cause: lastError });
  }

  /** Waits until the cell's membership has been read; true when it has at least one live worker. */
  async hasLiveWorkers(cellId: string): Promise<boolean> {
    const watcher = await this.watcher(cellId);
    return watcher.snapshot.ring.size > 0;
  }

  /** Called whenever the live workers of a watched cell change (a worker joined, left or expired). */
  onRingChange(listener: (cellId: string) => void): () => void {
    this.ringListeners.add(listener);
    return () => this.ringListeners.delete(listener);
  }

  stop(): void {
    this.stopped = true;
    if (this.idleSweeper !== undefined) clearInterval(this.idleSweeper);
    for (const stopListening of this.stopSharedListeners.splice(0)) stopListening();
    for (const cellId of [...this.watchers.keys()]) this.dropWatcher(cellId);
  }

  /** Cells whose watcher this router started and still runs (shared watchers are not counted). */
  watchedCellIds(): string[] {
    return [...this.watchers.keys()];
  }

  /**
   * An attempt in flight waits on the cell's watcher for its owner leaving: the idle sweep leaves it
   * running. Without an idle sweep (an edge's router, on every send) there is nothing to count.
   */
  private holdWatcher(cellId: string): () => void {
    if (this.idleSweeper === undefined) return releaseNothing;
    this.requestsInFlight.set(cellId, (this.requestsInFlight.get(cellId) ?? 0) + 1);
    return () => {
      const inFlight = (this.requestsInFlight.get(cellId) ?? 1) - 1;
      if (inFlight > 0) this.requestsInFlight.set(cellId, inFlight);
      else this.requestsInFlight.delete(cellId);
    };
  }

  private stopIdleWatchers(watchIdleMs: number): void {
    const nowMs = this.clock.monotonicNowMs();
    for (const [cellId, pending] of this.watchers) {
      if (this.requestsInFlight.has(cellId) || nowMs - (this.lastRoutedAtMs.get(cellId) ?? nowMs) < watchIdleMs) continue;
      this.dropWatcher(cellId, pending);
    }
  }

  /** Stops a watcher this router started (once it is set up) and forgets it. */
  private dropWatcher(cellId: string, pending = this.watchers.get(cellId)): void {
    this.watchers.delete(cellId);
    this.lastRoutedAtMs.delete(cellId);
    void pending?.then(
      (watcher) => watcher.stop(),
      () => undefined,
    );
  }

  private watcher(cellId: string): Promise<MembershipWatcher> {
    const shared = this.sharedWatchers.get(cellId);
    if (shared !== undefined) return shared;
    if (this.idleSweeper !== undefined) this.lastRoutedAtMs.set(cellId, this.clock.monotonicNowMs());
    const existing = this.watchers.get(cellId);
    if (existing !== undefined) {
      // Map order is insertion order: re-inserting marks the cell as most recently used.
      this.watchers.delete(cellId);
      this.watchers.set(cellId, existing);
      return existing;
    }
    const created = this.startWatcher(cellId);
    created.catch(() => {
      // Only if it is still this cell's entry: a later watcher may have replaced a failed one.
      if (this.watchers.get(cellId) === created) this.watchers.delete(cellId);
    });
    this.watchers.set(cellId, created);
    while (this.watchers.size > this.options.watchedCellsMax) {
      const oldest = this.watchers.keys().next().value;
      if (oldest === undefined) break;
      this.dropWatcher(oldest);
    }
    return created;
  }

  private async startWatcher(cellId: string): Promise<MembershipWatcher> {
    const bucket = await openExistingMembershipBucket(this.connection, this.options.namespace, cellId);
    const expiryCheckIntervalMs = leaseExpiryCheckIntervalMs(this.options.leaseMs);
    const watcher = new MembershipWatcher(
      bucket,
      cellId,
      expiryCheckIntervalMs,
      this.clock,
      this.logger,
      undefined,
      undefined,
      this.options.deletesExpiredLeases ?? true,
    );
    watcher.onChange(() => {
      for (const listener of this.ringListeners) listener(cellId);
    });
    await watcher.start();
    await watcher.ready;
    return watcher;
  }
}

const releaseNothing = (): void => {};
