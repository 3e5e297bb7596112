// Moves outbox rows (joined and receipt events: messages have none, docs/decisions/0009) to their
// recipients' mailboxes. The owner of a conversation relays the rows a change wrote right after acking it,
// and a sweeper re-drives rows left behind (a failed relay, a worker that died) for the conversations this
// worker owns now.
//
// Order: a recipient's rows of one conversation are applied in id order (the order they were written),
// never one before an older one. Relays of a conversation run one at a time (a keyed queue, apart from the
// request queue so acks never wait for relays), each starting from the conversation's oldest row, and a
// recipient's rows stop at its first failure. The shortcut of relaying just the rows a request returned
// is taken only for a conversation whose outbox this worker itself emptied since it last saw the ring
// change ("clean"). Applying is idempotent per (user, eventId), so relaying a row twice (a lost reply, two
// owners during a handover) never duplicates an event.
import { CellwireError, ConcurrencyLimiter, type Logger } from "@cellwire/cluster";
import { BoundedCache } from "./bounded-cache.ts";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { describeError } from "./store/errors.ts";
import type { ConversationStore, OutboxEntry } from "./store/store.ts";

export type OutboxRelayLimits = {
  /** Rows read at once by a drain or by one sweep page. */
  readonly batchMax: number;
  /** Batches one drain relays before leaving the rest to the next drain or the sweeper. */
  readonly drainBatchesMax: number;
  /** Recipients of one relay served at once. */
  readonly recipientsConcurrencyMax: number;
  /** Mailbox appends in flight across the worker. */
  readonly relaysInFlightMax: number;
  /** Relay tasks queued or running (per conversation: one running, at most one waiting). */
  readonly pendingMax: number;
  /** Conversations remembered as clean; forgetting one costs one outbox read. */
  readonly cleanConversationsMax: number;
  /** The sweeper re-drives rows written at least this long ago. */
  readonly retryAfterMs: number;
  readonly sweepIntervalMs: number;
  /** Pages of batchMax rows one sweep reads. */
  readonly sweepPagesMax: number;
};

export type OutboxRelayDependencies = {
  readonly store: Pick<ConversationStore, "pendingOutbox" | "deleteOutbox" | "markOutboxAttempt">;
  /** Applies one entry at its recipient's mailbox owner; throws when it was not applied. */
  readonly append: (entry: OutboxEntry) => Promise<unknown>;
  /** True when this worker owns the conversation on its ring now (the sweeper re-drives only those). */
  readonly ownsConversation: (conversationId: string) => boolean;
  readonly logger: Logger & { readonly error: (message: string) => void };
  readonly limits: OutboxRelayLimits;
};

/** Work waiting for a conversation's turn: rows from sends, or "drain" to read the outbox. */
type Work = { entries: readonly OutboxEntry[] | "drain" };

/** Malformed rows are logged once each (as long as this many are remembered). */
const reportedMalformedMax = 1000;

export class OutboxRelay {
  private readonly queue: KeyedSerialQueue;
  /** Per conversation, the work queued but not started: later sends and sweeps merge into it. */
  private readonly waiting = new Map<string, Work>();
  private readonly clean: BoundedCache<true>;
  /** Bumped when the ring changes: a drain that began before must not mark its conversation clean. */
  private generation = 0;
  private readonly limiter: ConcurrencyLimiter;
  private readonly reportedMalformed = new BoundedCache<true>(reportedMalformedMax);
  private sweepCursorId = 0;
  private sweepTimer: ReturnType<typeof setTimeout> | undefined;
  private sweeping: Promise<void> | undefined;
  private refusedSinceReport = 0;
  private stopped = false;
  /** Set once the stop wait ran out: queued work is skipped (its rows stay for the next owner). */
  private abandoned = false;

  constructor(private readonly dependencies: OutboxRelayDependencies) {
    const { limits } = dependencies;
    this.queue = new KeyedSerialQueue({ pendingPerKeyMax: 2, pendingTotalMax: Math.max(2, limits.pendingMax) });
    this.clean = new BoundedCache(limits.cleanConversationsMax);
    this.limiter = new ConcurrencyLimiter(limits.relaysInFlightMax);
  }

  /** Relay tasks queued or running. */
  get pending(): number {
    return this.queue.pending;
  }

  /** Resolves once no relay is queued or running. */
  whenIdle(): Promise<void> {
    return this.queue.whenIdle();
  }

  /** Relays the rows of a message just stored, after the earlier relays of its conversation. */
  relayStored(conversationId: string, entries: readonly OutboxEntry[]): void {
    if (entries.length > 0) this.schedule(conversationId, entries);
  }

  /** Relays whatever the conversation's outbox holds, oldest first. */
  drain(conversationId: string): void {
    this.schedule(conversationId, "drain");
  }

  /** The ring changed: conversations may have been served (and written) by another worker meanwhile. */
  forgetCleanConversations(): void {
    this.generation += 1;
    this.clean.clear();
  }

  /** Sweeps every sweepIntervalMs (the next sweep is timed from the end of the previous one). */
  start(): void {
    if (this.stopped || this.sweepTimer !== undefined) return;
    this.sweepTimer = setTimeout(() => {
      this.sweeping = this.sweep()
        .catch((error: unknown) => this.dependencies.logger.warn(`outbox sweep failed: ${describeError(error)}`))
        .finally(() => {
          this.sweeping = undefined;
          this.sweepTimer = undefined;
          this.start();
        });
    }, this.dependencies.limits.sweepIntervalMs);
  }

  /**
   * Stops sweeping and taking work, and waits up to waitMs for the relays in flight. Resolves true when
   * they all finished; false when the wait ran out (the rest is skipped and left to the next owner).
   */
  async stop(waitMs: number): Promise<boolean> {
    this.stopped = true;
    if (this.sweepTimer !== undefined) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), waitMs);
    });
    const finished = (async () => {
      await this.sweeping;
      await this.queue.whenIdle();
      return true as const;
    })();
    const outcome = await Promise.race([finished, expired]);
    clearTimeout(timer);
    if (!outcome) this.abandoned = true;
    return outcome;
  }

  /**
   * One pass: reads rows older than retryAfterMs in id order (from where the previous pass stopped, so a
   * backlog of rows owned by others cannot starve this worker's) and drains each conversation it owns.
   */
  async sweep(): Promise<void> {
    const { store, limits, logger, ownsConversation } = this.dependencies;
    if (this.refusedSinceReport > 0) {
      logger.warn(`${this.refusedSinceReport} relays were refused past WORKER_RELAY_PENDING_MAX; the sweeper re-drives them`);
      this.refusedSinceReport = 0;
    }
    const seen = new Set<string>();
    for (let page = 0; page < limits.sweepPagesMax && !this.stopped; page++) {
      const result = await store.pendingOutbox({ olderThanMs: limits.retryAfterMs, limit: limits.batchMax, afterId: this.sweepCursorId });
      this.reportMalformed(result.malformed);
      for (const entry of result.entries) {
        if (seen.has(entry.conversationId)) continue;
        seen.add(entry.conversationId);
        if (ownsConversation(entry.conversationId)) this.drain(entry.conversationId);
      }
      if (result.lastId === undefined || result.entries.length + result.malformed.length < limits.batchMax) {
        this.sweepCursorId = 0;
        return;
      }
      this.sweepCursorId = result.lastId;
    }
  }

  private schedule(conversationId: string, entries: readonly OutboxEntry[] | "drain"): void {
    // Rows not taken stay in the outbox: the next owner's sweeper re-drives them.
    if (this.stopped) return;
    const waiting = this.waiting.get(conversationId);
    if (waiting !== undefined) {
      if (waiting.entries !== "drain") {
        const merged = entries === "drain" ? "drain" : [...waiting.entries, ...entries];
        waiting.entries = merged !== "drain" && merged.length > this.dependencies.limits.batchMax ? "drain" : merged;
      }
      return;
    }
    const work: Work = { entries };
    const queued = this.queue.enqueue(conversationId, () => this.run(conversationId, work));
    if (!queued.accepted) {
      this.clean.delete(conversationId);
      this.refusedSinceReport += 1;
      return;
    }
    this.waiting.set(conversationId, work);
    // run() catches everything itself; this only guards against a bug in it.
    queued.result.catch((error: unknown) => this.dependencies.logger.error(`relay of ${conversationId} failed: ${describeError(error)}`));
  }

  private async run(conversationId: string, work: Work): Promise<void> {
    if (this.waiting.get(conversationId) === work) this.waiting.delete(conversationId);
    if (this.abandoned) return;
    try {
      if (work.entries !== "drain" && this.clean.has(conversationId)) {
        if (!(await this.relay(conversationId, work.entries))) this.clean.delete(conversationId);
        return;
      }
      await this.drainFromStore(conversationId);
    } catch (error) {
      this.clean.delete(conversationId);
      this.dependencies.logger.warn(`relay of ${conversationId} failed: ${describeError(error)}`);
    }
  }

  private async drainFromStore(conversationId: string): Promise<void> {
    const { store, limits } = this.dependencies;
    const generation = this.generation;
    let afterId = 0;
    let malformedSeen = false;
    for (let batch = 0; batch < limits.drainBatchesMax; batch++) {
      const page = await store.pendingOutbox({ olderThanMs: 0, limit: limits.batchMax, afterId, conversationId });
      if (page.malformed.length > 0) {
        malformedSeen = true;
        this.reportMalformed(page.malformed);
      }
      if (!(await this.relay(conversationId, page.entries))) {
        this.clean.delete(conversationId);
        return;
      }
      if (page.lastId === undefined || page.entries.length + page.malformed.length < limits.batchMax) {
        if (!malformedSeen && generation === this.generation) this.clean.set(conversationId, true);
        else this.clean.delete(conversationId);
        return;
      }
      afterId = page.lastId;
    }
    // Rows remain: the next drain or the sweeper continues.
    this.clean.delete(conversationId);
  }

  /**
   * Applies the entries (in id order), recipients concurrently, each recipient's rows one after another
   * and none after its first failure. Deletes the applied rows; true when every entry was applied.
   */
  private async relay(conversationId: string, entries: readonly OutboxEntry[]): Promise<boolean> {
    if (entries.length === 0) return true;
    const { store, limits, logger, append } = this.dependencies;
    const byRecipient = new Map<string, OutboxEntry[]>();
    for (const entry of entries) {
      const rows = byRecipient.get(entry.recipientUserId);
      if (rows === undefined) byRecipient.set(entry.recipientUserId, [entry]);
      else rows.push(entry);
    }
    const recipients = [...byRecipient.values()];
    const applied: number[] = [];
    const failed: number[] = [];
    let firstFailure: unknown;
    let next = 0;
    const lane = async (): Promise<void> => {
      for (let rows = recipients[next++]; rows !== undefined; rows = recipients[next++]) {
        for (const entry of rows) {
          if (this.abandoned) return;
          try {
            await this.limiter.run(() => append(entry));
            applied.push(entry.id);
          } catch (error) {
            failed.push(entry.id);
            firstFailure ??= error;
            break;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(limits.recipientsConcurrencyMax, recipients.length) }, lane));
    // Past the stop wait the pool may be closed: the rows stay, and applying them again is harmless.
    if (this.abandoned) return false;
    try {
      await store.deleteOutbox(applied);
      if (failed.length > 0) await store.markOutboxAttempt(failed);
    } catch (error) {
      logger.warn(`outbox rows of ${conversationId} relayed but not updated (they will be relayed again): ${describeError(error)}`);
      return false;
    }
    if (failed.length > 0) {
      logger.warn(`${failed.length} of ${recipients.length} recipients in ${conversationId} not reached, retried later: ${describeRelayFailure(firstFailure)}`);
    }
    return applied.length === entries.length;
  }

  private reportMalformed(rows: readonly { readonly id: number; readonly reason: string }[]): void {
    for (const { id, reason } of rows) {
      if (this.reportedMalformed.has(String(id))) continue;
      this.reportedMalformed.set(String(id), true);
      this.dependencies.logger.error(`outbox row ${id} does not decode (${reason}); it stays until an operator removes it`);
    }
  }
}

/** Typed errors from the directory or the router say what went wrong themselves (their causes only "timeout"). */
function describeRelayFailure(error: unknown): string {
  return error instanceof CellwireError ? `${error.name} (${error.code}): ${error.message}` : describeError(error);
}
