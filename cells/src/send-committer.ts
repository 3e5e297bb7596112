// Group commit of sends (docs/decisions/0009, docs/performance.md): the sends that arrive while a batch is
// being stored wait, and are all stored by the next single statement, so the cost of a commit, a
// statement and a round trip to Postgres is shared by every send in it; at low load a batch is one send
// and waits for nobody. One batch is stored at a time, so a conversation's sends take their seqs in
// arrival order and their messages are published in seq order.
//
// Overload is refused early rather than queued without end: a send that finds pendingSendsMax sends
// waiting, or that waited longer than queueWaitMsMax, is answered `overloaded` with a retry-after and
// never stored; one whose caller's budget ran out before its batch started is answered
// `deadline_exceeded` and never stored either (docs/decisions/0020).
//
// A pipelined send names its predecessor (afterClientMessageId: the send its session sent to the same
// conversation just before it, still unanswered then). It is stored only once that one is: earlier in
// its own batch, remembered as stored here, or found stored in the database (one read for the batch,
// only when neither answers; a predecessor whose sender is no member counts too, since it never will
// be); else it is answered `out_of_order`, and so are the sends that name it, so a conversation never
// holds a later send of a session before an earlier one (docs/decisions/0020). The ack (the reply) follows the
// commit; the publish of each new message to its members follows the replies, in the same turn when no
// earlier publish is in flight and the members are cached, so the NATS client writes both at once.
//
// Riding through a short database outage (docs/decisions/0025): a commit that failed because Postgres
// could not be reached (refused, reset, shutting down, starting up, no connection in time) is tried again
// after a short jittered backoff, with the sends that queued meanwhile, until each send's retry deadline;
// only a send whose deadline comes first is answered cell_unavailable. A commit whose outcome is unknown
// (the connection died after the statement was sent) is safe to repeat: the statement answers a
// (conversation, sender, clientMessageId) it already stored with that message and writes nothing.
import {
  activeTracing,
  backoffDelayMs,
  OldestFirst,
  sendTraceId,
  traceIdFields,
  type SendIdentity,
  type BackoffPolicy,
  type LogFields,
  type Logger,
  type TraceContext,
} from "@cellwire/cluster";
import type { CellReply, CellSendRequest } from "@cellwire/protocol";
import { cellErrorReply, movedReply } from "./cell-error-reply.ts";
import { describeError, isPostgresUnavailable } from "./store/errors.ts";
import type { OwnershipView } from "./worker-ownership.ts";
import { sendKey, type AppendMessageInput, type AppendMessageResult, type ConversationStore, type SendKey } from "./store/store.ts";
import type { StoredMessage } from "./message-publisher.ts";
import { RecentArrivals } from "./recent-arrivals.ts";
import type { SendCommitterMetrics } from "./worker-metrics.ts";

export type SendCommitterLimits = {
  /** Sends one statement stores at most. */
  readonly batchSendsMax: number;
  /** Sends waiting for their batch; one more is refused `overloaded` at once. */
  readonly pendingSendsMax: number;
  /** A send that waited longer than this for its batch is refused `overloaded`: the queue is bounded in time too. */
  readonly queueWaitMsMax: number;
  /**
   * Sends remembered as stored (their keys, the newest), so the predecessor of a pipelined send is
   * found without a read; settledSendsRememberedMaxDefault when unset.
   */
  readonly settledSendsRememberedMax?: number;
};

/** 16,384 keys of about 100 bytes: under 2 MB, and far more than the sends in flight to one worker. */
export const settledSendsRememberedMaxDefault = 16_384;

/**
 * Lingering (optional): when the last busySendsMin sends (the new one included) arrived within
 * busyWindowMs, a send that finds the committer idle waits up to lingerMs for others before its statement
 * starts, so that a busy worker commits fewer, larger batches (a statement and its commit cost a few
 * hundred µs of Postgres CPU whatever their size: docs/performance.md). A worker receiving fewer sends
 * starts each at once: a linger would rarely find another send to wait for, and would add its whole length
 * to the send's latency (measured at 50 sends/s when any batch started within the window made a worker
 * busy: ack p50 5.3–5.6 ms against 3.6–4.3 without lingering). A batch that fills up starts at once too.
 */
export type SendLinger = {
  readonly lingerMs: number;
  readonly busyWindowMs: number;
  /** At least 1; 1 makes every send linger, 2 every send that follows another within the window. */
  readonly busySendsMin: number;
  /** Runs `callback` after `ms`; returns a cancel function. */
  readonly setTimer: (ms: number, callback: () => void) => () => void;
};

/**
 * Retries of a commit that failed because the database could not be reached. A send is retried until
 * `windowMs` after its receipt or the end of its caller's budget (the request's `budgetMs`, docs/decisions/
 * 0020), whichever comes first. Absent: such a commit is answered at once, as any failure.
 */
export type SendRetry = {
  readonly windowMs: number;
  readonly random: () => number;
  /** Resolves after `ms`. */
  readonly sleep: (ms: number) => Promise<void>;
};

export type SendCommitterDependencies = {
  readonly workerId: string;
  readonly store: Pick<ConversationStore, "appendMessages" | "settledSends">;
  readonly ownership: OwnershipView;
  /**
   * Publishes the new messages of one batch to their members; called in batch order, MUST keep it.
   * Returns undefined when it published at once, else the promise of a publish that had to read first.
   */
  readonly publish: (messages: readonly StoredMessage[]) => Promise<void> | undefined;
  readonly monotonicNowMs: () => number;
  readonly logger: Logger & { readonly error: (message: string, fields?: LogFields) => void };
  readonly limits: SendCommitterLimits;
  readonly linger?: SendLinger;
  readonly retry?: SendRetry;
  /** Each batch's size as its statement starts; absent: not counted. */
  readonly metrics?: SendCommitterMetrics;
};

type PendingSend = {
  readonly request: CellSendRequest;
  readonly enqueuedAtMs: number;
  /** The caller stops waiting at this moment (monotonic ms): a send not started by then is not stored. */
  readonly deadlineAtMs: number;
  /** No attempt to store the send starts after this moment (monotonic ms); at most deadlineAtMs. */
  readonly retryDeadlineAtMs: number;
  /**
   * Set once an attempt that carried the send failed: it may have committed without being published, so
   * a later attempt that finds it stored (deduplicated) publishes it.
   */
  outcomeUnknown: boolean;
  readonly respond: (reply: CellReply) => void;
  /** The send's span on this worker when tracing is on: its commit links to it, its delivery carries it. */
  readonly trace: TraceContext | undefined;
};

/**
 * The trace ids of sends, for the fields of a line about them (docs/decisions/0037): the span's with
 * tracing on, else the id derived from the send itself.
 */
function sendTraceFields(
  sends: readonly ({ readonly trace?: TraceContext | undefined } & (
    { readonly request: SendIdentity } | { readonly message: SendIdentity }
  ))[],
): LogFields | undefined {
  return traceIdFields(sends.map((send) => send.trace?.traceId ?? sendTraceId("request" in send ? send.request : send.message)));
}

/** What one attempt at a batch left to try again: the sends, and the failure that stopped them. */
type FailedAttempt = { readonly sends: readonly PendingSend[]; readonly error: unknown };

/** A retry-after is never shorter (clients would come back before anything changed) nor longer than these. */
const retryAfterMsMin = 50;
const retryAfterMsMax = 2000;
/** The input index of a send whose key an earlier send of its batch took with another body. */
const reusedInBatch = -2;
/**
 * Delays between attempts at a commit while the database cannot be reached: short, since a restarted
 * Postgres takes connections again within a second or two and every send waits meanwhile, jittered so
 * the cell's workers do not all come back at the same instant. The floor keeps a refusing database from
 * being asked in a tight loop (full jitter can draw ~0 ms). The retries are bounded by each send's
 * retry deadline, at most 1 / retryDelayMsMin attempts a millisecond of it.
 */
const retryBackoff: BackoffPolicy = { initialDelayMs: 25, maxDelayMs: 250, multiplier: 2 };
const retryDelayMsMin = 10;

export class SendCommitter {
  private pending: PendingSend[] = [];
  private running = false;
  /** Publishes run one after another, in batch order, apart from the commits. */
  private publishing: Promise<void> = Promise.resolve();
  /** Publishes started and not yet settled: with none, a batch's publish may go at once. */
  private publishesInFlight = 0;
  /** The duration of the last batch's statement: with the queue length, how long a newcomer would wait. */
  private lastBatchMs = 1;
  private readonly arrivals: RecentArrivals;
  /** Set while a lingering start is scheduled: cancels it. */
  private cancelLinger: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];
  /** sendKey()s of sends stored (or found stored) here, oldest first: the predecessors already known. */
  private readonly storedRecently = new Set<string>();
  private readonly oldestStored = new OldestFirst(this.storedRecently);
  private readonly settledSendsRememberedMax: number;

  constructor(private readonly dependencies: SendCommitterDependencies) {
    const { limits } = dependencies;
    if (!(limits.batchSendsMax >= 1 && limits.pendingSendsMax >= 1 && limits.queueWaitMsMax > 0)) {
      throw new RangeError("SendCommitter needs batchSendsMax >= 1, pendingSendsMax >= 1 and queueWaitMsMax > 0");
    }
    this.settledSendsRememberedMax = limits.settledSendsRememberedMax ?? settledSendsRememberedMaxDefault;
    this.arrivals = new RecentArrivals(dependencies.linger?.busySendsMin ?? 1);
    if (!(this.settledSendsRememberedMax >= 1)) throw new RangeError("SendCommitter needs settledSendsRememberedMax >= 1");
  }

  /** Sends waiting or being stored. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * Queues a send; `respond` is called exactly once: after the commit, or at once when it is refused.
   * `budgetMs` is how long the caller still waits for the reply; `trace` the send's span, when tracing is on.
   */
  submit(request: CellSendRequest, budgetMs: number, respond: (reply: CellReply) => void, trace?: TraceContext): void {
    const { limits, monotonicNowMs } = this.dependencies;
    if (this.pending.length >= limits.pendingSendsMax) {
      respond(this.overloaded(`${this.pending.length} sends are waiting for this worker's next commit`));
      return;
    }
    const nowMs = monotonicNowMs();
    const deadlineAtMs = nowMs + budgetMs;
    const retryWindowMs = this.dependencies.retry?.windowMs ?? 0;
    const retryDeadlineAtMs = Math.min(deadlineAtMs, nowMs + retryWindowMs);
    this.pending.push({ request, enqueuedAtMs: nowMs, deadlineAtMs, retryDeadlineAtMs, outcomeUnknown: false, respond, trace });
    const oldestArrivalAtMs = this.arrivals.arrive(nowMs);
    if (this.running) return;
    const { linger } = this.dependencies;
    if (this.cancelLinger !== undefined) {
      // Lingering: a full batch goes at once.
      if (this.pending.length < limits.batchSendsMax) return;
      this.cancelLinger();
      this.cancelLinger = undefined;
    } else if (linger !== undefined && linger.lingerMs > 0 && nowMs - oldestArrivalAtMs < linger.busyWindowMs) {
      this.cancelLinger = linger.setTimer(linger.lingerMs, () => {
        this.cancelLinger = undefined;
        if (!this.running) void this.run();
      });
      return;
    }
    void this.run();
  }

  /** Resolves once no send is waiting, being stored or being published. */
  async whenIdle(): Promise<void> {
    if (this.running || this.cancelLinger !== undefined) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    await this.publishing;
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.dependencies.limits.batchSendsMax);
        await this.commit(batch);
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /**
   * Stores one batch; when the database cannot be reached, tries again after a backoff, with the sends
   * that queued meanwhile (they would only wait behind it), until every send is answered.
   */
  private async commit(batch: readonly PendingSend[]): Promise<void> {
    const { retry, limits, monotonicNowMs, logger } = this.dependencies;
    let failed = await this.attempt(batch, []);
    for (let retryIndex = 0; failed !== undefined; retryIndex++) {
      const delayMs = retry === undefined ? 0 : Math.max(retryDelayMsMin, backoffDelayMs(retryBackoff, retryIndex, retry.random));
      // An attempt must start, and have the time the last one took, before the send's retry deadline.
      const lastAttemptEndsAtMs = monotonicNowMs() + delayMs + this.lastBatchMs;
      const retrying: PendingSend[] = [];
      for (const send of failed.sends) {
        if (retry !== undefined && lastAttemptEndsAtMs < send.retryDeadlineAtMs) retrying.push(send);
        else send.respond(cellErrorReply({ kind: "error", error: failed.error }));
      }
      if (retry === undefined || retrying.length === 0) return;
      if (retryIndex === 0)
        logger.warn(
          `the cell database cannot be reached (${describeError(failed.error)}): retrying ${retrying.length} sends until their deadlines`,
          sendTraceFields(retrying),
        );
      await retry.sleep(delayMs);
      failed = await this.attempt(this.pending.splice(0, Math.max(0, limits.batchSendsMax - retrying.length)), retrying);
    }
  }

  /**
   * One attempt at storing `retried` (admitted by an earlier attempt) and `queued` (new from the queue,
   * admitted here); answers every send it can, and returns those to try again when the database could
   * not be reached.
   */
  private async attempt(queued: readonly PendingSend[], retried: readonly PendingSend[]): Promise<FailedAttempt | undefined> {
    const { ownership, workerId, store, limits, monotonicNowMs, logger } = this.dependencies;
    const startedAtMs = monotonicNowMs();
    const admitted: PendingSend[] = [...retried];
    for (const send of queued) {
      if (startedAtMs >= send.deadlineAtMs)
        send.respond(
          cellErrorReply({ kind: "deadline_exceeded", detail: "the send's deadline passed before its turn; it was not stored" }),
        );
      else if (startedAtMs - send.enqueuedAtMs > limits.queueWaitMsMax)
        send.respond(this.overloaded("the send waited too long for its turn; it was not stored"));
      else admitted.push(send);
    }
    if (admitted.length === 0) return undefined;
    if (!ownership.leaseHeld()) {
      for (const send of admitted) send.respond(cellErrorReply({ kind: "lease_lapsed" }));
      return undefined;
    }
    // One ring, and its epoch, for the whole batch: read at the moment it is stored, as every write does.
    const { ring, ringEpoch: epoch } = ownership.snapshot();
    const owned: PendingSend[] = [];
    for (const send of admitted) {
      const ownerWorkerId = ring.ownerOf(send.request.conversationId);
      if (ownerWorkerId === workerId) owned.push(send);
      else send.respond(cellErrorReply({ kind: "not_owner", key: send.request.conversationId, ownerWorkerId }));
    }
    if (owned.length === 0) return undefined;
    // Checked here, not awaited, for the ordinary batch: it goes on to its statement in the same tick.
    const inOrder = owned.some((send) => send.request.afterClientMessageId !== undefined) ? await this.inSendOrder(owned) : owned;
    if (inOrder.length === 0) return undefined;
    // A send repeated within one batch (a client retry that caught up with its first attempt) is stored
    // once and both get the answer; the same key with another body is the id reused for another message,
    // refused as the store refuses it once the first is stored (reusedInBatch).
    const inputIndexByKey = new Map<string, number>();
    const inputs: AppendMessageInput[] = [];
    const inputIndexOfSend = inOrder.map((send) => {
      const { conversationId, senderUserId, senderDeviceId, clientMessageId, body } = send.request;
      const key = `${conversationId}\n${senderUserId}\n${clientMessageId}`;
      const known = inputIndexByKey.get(key);
      if (known !== undefined) return inputs[known]?.body === body ? known : reusedInBatch;
      inputIndexByKey.set(key, inputs.length);
      inputs.push({ conversationId, senderUserId, senderDeviceId, clientMessageId, body, epoch });
      return inputs.length - 1;
    });
    let results: AppendMessageResult[];
    this.dependencies.metrics?.batchStarted(inputs.length);
    // The batch's statement is one span linked to each send's (docs/decisions/0034), when tracing is on.
    const tracing = activeTracing();
    const commitSpan =
      tracing === undefined
        ? undefined
        : tracing.startSpan(
            "worker.send_commit",
            { "db.operation.name": "append_messages", "cellwire.batch.sends": inOrder.length },
            undefined,
            inOrder.map((send) => send.trace),
          );
    let commitFailure: string | undefined;
    try {
      results = await store.appendMessages(inputs);
    } catch (error) {
      commitFailure = error instanceof Error ? error.name : "error";
      if (this.dependencies.retry !== undefined && isPostgresUnavailable(error)) {
        for (const send of inOrder) send.outcomeUnknown = true;
        return { sends: inOrder, error };
      }
      logger.error(`storing a batch of ${inputs.length} sends failed: ${describeError(error)}`, sendTraceFields(inOrder));
      for (const send of inOrder) send.respond(cellErrorReply({ kind: "error", error }));
      return undefined;
    } finally {
      this.lastBatchMs = Math.max(1, monotonicNowMs() - startedAtMs);
      if (commitSpan !== undefined) tracing?.endSpan(commitSpan, commitFailure);
    }
    const stored: StoredMessage[] = [];
    const published = new Set<number>();
    const fenced = new Set<string>();
    inOrder.forEach((send, sendIndex) => {
      const inputIndex = inputIndexOfSend[sendIndex] ?? -1;
      if (inputIndex === reusedInBatch) {
        send.respond(cellErrorReply({ kind: "refused", refusal: "client_message_id_reused" }));
        return;
      }
      const result = results[inputIndex];
      if (result === undefined) {
        send.respond(cellErrorReply({ kind: "error", error: new Error(`the store returned no result for send ${inputIndex}`) }));
        return;
      }
      send.respond(replyFor(send.request.conversationId, epoch, result));
      if (result.outcome === "stored") this.rememberStored(sendKey(send.request));
      if (result.outcome === "fenced") fenced.add(send.request.conversationId);
      // The first send of a repeated key carries the publish; a deduplicated one was published when stored,
      // unless it was stored by an attempt whose outcome this worker never learnt (then it is published
      // now, at worst a second time: devices drop a seq they already have).
      if (result.outcome === "stored" && (!result.deduplicated || send.outcomeUnknown) && !published.has(inputIndex)) {
        published.add(inputIndex);
        stored.push({ message: result.message, membersVersion: result.deduplicated ? 0 : result.membersVersion, trace: send.trace });
      }
    });
    // A stale owner says so, as the request handler does for its other writes (one line per batch).
    const [firstFenced] = fenced;
    if (firstFenced !== undefined) {
      logger.warn(`worker ${workerId} was fenced on ${[...fenced].join(", ")}: written under an epoch after ${epoch}`);
      ownership.fenced?.(firstFenced, epoch);
    }
    if (stored.length > 0) this.publishInOrder(stored);
    return undefined;
  }

  /**
   * Publishes a batch's messages after every earlier batch's. With no publish in flight it goes at once,
   * in the same turn as the batch's replies, so both leave in one NATS write when the members are cached.
   */
  private publishInOrder(stored: readonly StoredMessage[]): void {
    const { publish, logger } = this.dependencies;
    // Stored is stored: devices that missed a live message see the gap and read the log. Caught whether
    // publish rejects or throws, so the chain (every later batch's publish) goes on.
    const failed = (error: unknown): void =>
      logger.warn(`publishing ${stored.length} messages failed: ${describeError(error)}`, sendTraceFields(stored));
    let pending: Promise<void> | undefined;
    if (this.publishesInFlight === 0) {
      try {
        pending = publish(stored);
      } catch (error) {
        failed(error);
        return;
      }
      if (pending === undefined) return;
    } else {
      pending = this.publishing.then(() => publish(stored));
    }
    this.publishesInFlight += 1;
    this.publishing = pending.catch(failed).finally(() => {
      this.publishesInFlight -= 1;
    });
  }

  /**
   * The sends of a batch whose predecessors are stored, in batch order; the others are answered
   * out_of_order (or with the error of the read that would have told). Sends without a predecessor, the
   * ordinary case, cost one property check and no read.
   */
  private async inSendOrder(sends: readonly PendingSend[]): Promise<readonly PendingSend[]> {
    const firstIndexByKey = new Map<string, number>();
    sends.forEach((send, index) => {
      const key = sendKey(send.request);
      if (!firstIndexByKey.has(key)) firstIndexByKey.set(key, index);
    });
    // The predecessors neither remembered nor earlier in this batch: one read for all of them.
    const unknown = new Map<string, SendKey>();
    sends.forEach((send, index) => {
      const predecessor = predecessorOf(send);
      if (predecessor === undefined) return;
      const key = sendKey(predecessor);
      const earlierAt = firstIndexByKey.get(key);
      if (!this.storedRecently.has(key) && !(earlierAt !== undefined && earlierAt < index)) unknown.set(key, predecessor);
    });
    let settledInDatabase: ReadonlySet<string> = new Set();
    let readFailure: unknown;
    if (unknown.size > 0) {
      try {
        // Not remembered: a key settled because its sender is not a member may be sent again once they are.
        settledInDatabase = await this.dependencies.store.settledSends([...unknown.values()]);
      } catch (error) {
        this.dependencies.logger.warn(`reading the predecessors of ${unknown.size} pipelined sends failed: ${describeError(error)}`);
        readFailure = error;
      }
    }
    const admitted: PendingSend[] = [];
    const admittedKeys = new Set<string>();
    for (const send of sends) {
      const predecessor = predecessorOf(send);
      const key = predecessor === undefined ? undefined : sendKey(predecessor);
      if (key === undefined || admittedKeys.has(key) || this.storedRecently.has(key) || settledInDatabase.has(key)) {
        admitted.push(send);
        admittedKeys.add(sendKey(send.request));
      } else if (readFailure !== undefined && unknown.has(key)) {
        send.respond(cellErrorReply({ kind: "error", error: readFailure }));
      } else {
        const { clientMessageId, afterClientMessageId = "" } = send.request;
        send.respond(cellErrorReply({ kind: "out_of_order", clientMessageId, afterClientMessageId }));
      }
    }
    return admitted;
  }

  private rememberStored(key: string): void {
    this.storedRecently.delete(key);
    this.storedRecently.add(key);
    if (this.storedRecently.size <= this.settledSendsRememberedMax) return;
    const oldest = this.oldestStored.next();
    if (oldest !== undefined) this.storedRecently.delete(oldest);
  }

  private overloaded(reason: string): CellReply {
    const { limits } = this.dependencies;
    const batchesAhead = Math.ceil(this.pending.length / limits.batchSendsMax) + 1;
    const retryAfterMs = Math.min(retryAfterMsMax, Math.max(retryAfterMsMin, Math.round(batchesAhead * this.lastBatchMs)));
    return cellErrorReply({ kind: "overloaded", reason: "sends_full", detail: reason, retryAfterMs });
  }
}

function replyFor(conversationId: string, epoch: number, result: AppendMessageResult): CellReply {
  switch (result.outcome) {
    case "stored":
      return { type: "cell.stored", message: result.message, deduplicated: result.deduplicated };
    case "not_a_member":
    case "client_message_id_reused":
      return cellErrorReply({ kind: "refused", refusal: result.outcome });
    case "fenced":
      return cellErrorReply({ kind: "fenced", key: conversationId, epoch });
    case "moving":
      return cellErrorReply({ kind: "moving", key: conversationId });
    case "moved":
      return movedReply("conversation", conversationId, result);
  }
}

/** The send a pipelined send must follow: the same sender's, in the same conversation. */
function predecessorOf(send: PendingSend): SendKey | undefined {
  const { conversationId, senderUserId, afterClientMessageId } = send.request;
  return afterClientMessageId === undefined ? undefined : { conversationId, senderUserId, clientMessageId: afterClientMessageId };
}
