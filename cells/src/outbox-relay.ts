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
//
// One bad recipient (docs/decisions/0022): a failed row backs off (retryDelayMsMin doubling up to
// retryDelayMsMax, with jitter, by the store's clock), and the recipient's newer rows of the conversation
// wait behind it while the other recipients' rows keep flowing, through every page of a drain. At
// failuresMax the recipient's rows of the conversation go to the dead letters, and while any are there
// its newer rows follow them (order holds); an operator redrives them (`cellwire dead-letters`). Sends
// of a clean conversation take the same path as before: no read, no extra statement.
import { activeTracing, BoundedCache, CellwireError, ConcurrencyLimiter, type Logger, type TraceContext } from "@cellwire/cluster";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { describeError } from "./store/errors.ts";
import type { ConversationStore, OutboxEntry, OutboxRetry } from "./store/store.ts";
import type { MailboxAppender } from "./mailbox-appender.ts";
import type { WorkerOwnership } from "./worker-ownership.ts";
import type { OutboxRelayMetrics } from "./worker-metrics.ts";

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
  /** A row's first retry waits at least this long; each failure doubles the ceiling (jitter below it). */
  readonly retryDelayMsMin: number;
  readonly retryDelayMsMax: number;
  /** Failed relays of a row before its recipient's rows of the conversation go to the dead letters. */
  readonly failuresMax: number;
};

export type OutboxRelayDependencies = {
  readonly store: Pick<
    ConversationStore,
    "pendingOutbox" | "deleteOutbox" | "markOutboxAttempt" | "deadLetterOutbox" | "deadLetteredRecipients"
  >;
  /** In [0, 1): the jitter of retry delays. */
  readonly random: () => number;
  /** Applies one entry at its recipient's mailbox owner; its append throws when it was not applied. */
  readonly appender: Pick<MailboxAppender, "append">;
  /** Whether this worker owns a conversation on its ring now (the sweeper re-drives only those). */
  readonly ownership: Pick<WorkerOwnership, "owns">;
  readonly logger: Logger & { readonly error: (message: string) => void };
  readonly limits: OutboxRelayLimits;
  /** Appends, retries and dead letters, counted once per relay; absent: not counted. */
  readonly metrics?: OutboxRelayMetrics;
};

/**
 * Work waiting for a conversation's turn: rows from sends, or "drain" to read the outbox. With tracing on,
 * `traces` holds the spans of the requests that asked for it (at most batchMax), which its relay links to.
 */
type Work = { entries: readonly OutboxEntry[] | "drain"; readonly traces?: (TraceContext | undefined)[] };

/** Malformed rows are logged once each (as long as this many are remembered). */
const reportedMalformedMax = 1000;

/**
 * How long a row waits before its next relay after its `attempts`-th failure: a ceiling of
 * retryDelayMsMin doubled per earlier failure, at most retryDelayMsMax, and a uniform draw between half
 * of it and all of it, so recipients that failed together spread out and none is retried in a tight loop.
 */
export function relayRetryDelayMs(
  attempts: number,
  limits: Pick<OutboxRelayLimits, "retryDelayMsMin" | "retryDelayMsMax">,
  random: () => number,
): number {
  const ceilingMs = Math.min(limits.retryDelayMsMax, limits.retryDelayMsMin * 2 ** Math.max(0, attempts - 1));
  return Math.max(limits.retryDelayMsMin, Math.floor(ceilingMs / 2 + random() * (ceilingMs / 2)));
}

/** What one relay of a conversation's rows knows beyond the rows: their retry state and who is held. */
type RelayState = {
  /** Rows that failed before, by id (fresh rows are absent: attempts 0, due). */
  readonly retried: ReadonlyMap<number, OutboxRetry>;
  /** Recipients whose rows wait this drain (one backs off, failed, or went to the dead letters). */
  readonly held: Set<string>;
  /** Recipients with dead letters in the conversation: their rows follow them there. */
  readonly deadLettered: ReadonlySet<string>;
};

const noRetries: ReadonlyMap<number, OutboxRetry> = new Map();
const nobody: ReadonlySet<string> = new Set();

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
    const { store, limits, logger, ownership } = this.dependencies;
    if (this.refusedSinceReport > 0) {
      logger.warn(`${this.refusedSinceReport} relays were refused past WORKER_RELAY_PENDING_MAX; the sweeper re-drives them`);
      this.refusedSinceReport = 0;
    }
    const seen = new Set<string>();
    for (let page = 0; page < limits.sweepPagesMax && !this.stopped; page++) {
      // Only due rows: a recipient backing off costs its conversation no drain until its retry time.
      const result = await store.pendingOutbox({
        olderThanMs: limits.retryAfterMs,
        limit: limits.batchMax,
        afterId: this.sweepCursorId,
        dueOnly: true,
      });
      this.reportMalformed(result.malformed);
      for (const entry of result.entries) {
        if (seen.has(entry.conversationId)) continue;
        seen.add(entry.conversationId);
        if (ownership.owns(entry.conversationId)) this.drain(entry.conversationId);
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
    const tracing = activeTracing();
    const trace = tracing?.activeContext();
    if (waiting !== undefined) {
      if (trace !== undefined && waiting.traces !== undefined && waiting.traces.length < this.dependencies.limits.batchMax)
        waiting.traces.push(trace);
      if (waiting.entries !== "drain") {
        const merged = entries === "drain" ? "drain" : [...waiting.entries, ...entries];
        waiting.entries = merged !== "drain" && merged.length > this.dependencies.limits.batchMax ? "drain" : merged;
      }
      return;
    }
    const work: Work = tracing === undefined ? { entries } : { entries, traces: [trace] };
    const queued = this.queue.enqueue(conversationId, () =>
      // One span per relay, linked to the requests whose rows it carries (docs/decisions/0034).
      tracing === undefined || work.traces === undefined
        ? this.run(conversationId, work)
        : tracing.inLinkedSpan("worker.relay", { "cellwire.relay.work": work.entries === "drain" ? "drain" : "rows" }, work.traces, () =>
            this.run(conversationId, work),
          ),
    );
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
        const outcome = await this.relay(conversationId, work.entries, { retried: noRetries, held: new Set(), deadLettered: nobody });
        if (outcome !== "complete") this.clean.delete(conversationId);
        return;
      }
      await this.drainFromStore(conversationId);
    } catch (error) {
      this.clean.delete(conversationId);
      this.dependencies.logger.warn(`relay of ${conversationId} failed: ${describeError(error)}`);
    }
  }

  /**
   * Relays the conversation's rows page by page. A recipient held back (backing off, failed, dead-lettered)
   * stays held for the rest of the drain, so its newer rows on later pages wait too, while the others'
   * rows on every page flow. Clean only when every row was applied and nobody has dead letters.
   */
  private async drainFromStore(conversationId: string): Promise<void> {
    const { store, limits } = this.dependencies;
    const generation = this.generation;
    // A conversation with dead letters is never clean: its newer rows of those recipients must follow them.
    const deadLettered = new Set(await store.deadLetteredRecipients(conversationId));
    const held = new Set<string>();
    let afterId = 0;
    let malformedSeen = false;
    for (let batch = 0; batch < limits.drainBatchesMax; batch++) {
      const page = await store.pendingOutbox({ olderThanMs: 0, limit: limits.batchMax, afterId, conversationId });
      if (page.malformed.length > 0) {
        malformedSeen = true;
        this.reportMalformed(page.malformed);
      }
      const outcome = await this.relay(conversationId, page.entries, {
        retried: new Map(page.retried.map((retry) => [retry.id, retry])),
        held,
        deadLettered,
      });
      if (outcome === "unrecorded") {
        this.clean.delete(conversationId);
        return;
      }
      if (page.lastId === undefined || page.entries.length + page.malformed.length < limits.batchMax) {
        if (!malformedSeen && held.size === 0 && deadLettered.size === 0 && generation === this.generation)
          this.clean.set(conversationId, true);
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
   * and none after its first failure or a row still backing off. Deletes the applied rows, records the
   * failures (and moves a recipient past failuresMax to the dead letters). `complete` when every entry
   * was applied; `unrecorded` when the outcome could not be written (the rows are relayed again).
   */
  private async relay(
    conversationId: string,
    entries: readonly OutboxEntry[],
    state: RelayState,
  ): Promise<"complete" | "partial" | "unrecorded"> {
    if (entries.length === 0) return "complete";
    const { store, limits, logger, appender, random } = this.dependencies;
    const byRecipient = new Map<string, OutboxEntry[]>();
    for (const entry of entries) {
      const rows = byRecipient.get(entry.recipientUserId);
      if (rows === undefined) byRecipient.set(entry.recipientUserId, [entry]);
      else rows.push(entry);
    }
    const toDeadLetter = new Map<string, string>();
    for (const recipient of byRecipient.keys()) {
      if (state.deadLettered.has(recipient)) toDeadLetter.set(recipient, "older rows of this recipient went to the dead letters first");
    }
    const recipients = [...byRecipient.entries()].filter(([recipient]) => !state.held.has(recipient) && !toDeadLetter.has(recipient));
    const applied: number[] = [];
    const failed: { entry: OutboxEntry; error: unknown }[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      for (let current = recipients[next++]; current !== undefined; current = recipients[next++]) {
        const [recipient, rows] = current;
        for (const entry of rows) {
          if (this.abandoned) return;
          // Its retry time has not come: this row and the recipient's newer ones wait, with no attempt.
          if (state.retried.get(entry.id)?.backingOff === true) {
            state.held.add(recipient);
            break;
          }
          try {
            await this.limiter.run(() => appender.append(entry));
            applied.push(entry.id);
          } catch (error) {
            failed.push({ entry, error });
            state.held.add(recipient);
            break;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(limits.recipientsConcurrencyMax, recipients.length) }, lane));
    this.dependencies.metrics?.relayed(applied.length, failed.length);
    // Past the stop wait the pool may be closed: the rows stay, and applying them again is harmless.
    if (this.abandoned) return "unrecorded";
    try {
      await store.deleteOutbox(applied);
      if (failed.length > 0) {
        const counted = await store.markOutboxAttempt(
          failed.map(({ entry, error }) => ({
            id: entry.id,
            retryAfterMs: relayRetryDelayMs((state.retried.get(entry.id)?.attempts ?? 0) + 1, limits, random),
            error: describeRelayFailure(error).slice(0, 2000),
          })),
        );
        const attemptsById = new Map(counted.map(({ id, attempts }) => [id, attempts]));
        for (const { entry, error } of failed) {
          if ((attemptsById.get(entry.id) ?? 0) >= limits.failuresMax)
            toDeadLetter.set(entry.recipientUserId, describeRelayFailure(error).slice(0, 2000));
        }
      }
      for (const [recipientUserId, reason] of toDeadLetter) {
        state.held.add(recipientUserId);
        const moved = await store.deadLetterOutbox({ conversationId, recipientUserId, reason });
        this.dependencies.metrics?.deadLettered(moved);
        if (!state.deadLettered.has(recipientUserId)) {
          logger.error(
            `${moved} outbox rows of ${recipientUserId} in ${conversationId} went to the dead letters after ${limits.failuresMax} failed relays (cellwire dead-letters): ${reason}`,
          );
        }
      }
    } catch (error) {
      logger.warn(`outbox rows of ${conversationId} relayed but not updated (they will be relayed again): ${describeError(error)}`);
      return "unrecorded";
    }
    if (failed.length > 0) {
      logger.warn(
        `${failed.length} of ${byRecipient.size} recipients in ${conversationId} not reached, retried later: ${describeRelayFailure(failed[0]?.error)}`,
      );
    }
    return applied.length === entries.length ? "complete" : "partial";
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
