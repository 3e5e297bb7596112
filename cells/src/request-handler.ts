// What a worker does with one request (from an edge, or from a relay for a mailbox), apart from NATS:
// decode it, check that this worker owns its key, queue it behind earlier requests for the same key
// (conversation, or user for mailbox requests), run it against the store, reply, then hand the outbox rows
// it wrote (joined, receipt events) to the relay or publish an appended mailbox event. Sends skip the
// keyed queue: they go to the SendCommitter, which stores the sends of many conversations in one
// statement and publishes their messages (docs/decisions/0009). Reads of a conversation's log
// (cell.messagesAfter) need no turn. The worker wires it to its subscription; tests drive it directly.
//
// A write is fenced: when its turn comes, the worker checks again that it holds its lease and owns the
// key on its current ring, and passes that ring's epoch to the store, which refuses it (fenced) if the
// key was written under a later epoch. Either refusal answers not_owner, so the router routes again.
//
// Migration (migration.ts): a key that is moving answers `moving` (writes while it is frozen here, every
// request while it is importing here), a key that moved away answers cell.moved. cell.migrate runs outside
// the key's turn (only its freeze, unfreeze and tombstone take turns), so requests during a copy are
// refused at once instead of waiting behind it; cell.import is a write in the key's turn; cell.stats and
// the operator's dead-letter requests (cell.deadLetters, cell.redriveDeadLetters) are answered by
// whichever worker gets them.
import { activeTracing, requestTraceId, type LogFields, type Logger, type TraceContext } from "@cellwire/cluster";
import {
  cellRequestEnvelope,
  cellRequestKey,
  decode,
  parseJson,
  receiptFanOutMembersMax,
  type CellDeadLettersRequest,
  type CellRedriveDeadLettersRequest,
  type CellMessagesAfterRequest,
  type CellSharedPeersRequest,
  type CellMigrateRequest,
  type CellReply,
  type CellRequest,
  type CellSendBatch,
  type CellSendBatchReplies,
  type Delivery,
} from "@cellwire/protocol";
import { cellErrorReply } from "./cell-error-reply.ts";
import { membersReply } from "./members-reply.ts";
import type { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import type { MigrationMetrics } from "./worker-metrics.ts";
import { MigrationCoordinator, type KeyTurn, type MigrationDirectory, type MigrationLimits, type MigrationRouter } from "./migration.ts";
import { describeError } from "./store/errors.ts";
import type { SendCommitter } from "./send-committer.ts";
import type { ConversationResult, ConversationStore, Fenced, OutboxEntry, StoreRefusal } from "./store/store.ts";
import type { OwnershipView } from "./worker-ownership.ts";
import { invalidRequest } from "./request-validation.ts";
import { orderedReplies } from "./ordered-replies.ts";
import {
  appendedOutcome,
  conversationOutcome,
  historyOutcome,
  importedOutcome,
  mailboxPageOutcome,
  migrating,
  receiptOutcome,
  refused,
  type Outcome,
} from "./request-outcomes.ts";

/** What cell.migrate needs beyond the store; a worker without it answers cell.migrate with cell_unavailable. */
export type MigrationDependencies = {
  readonly directory: MigrationDirectory;
  readonly router: MigrationRouter;
  readonly clock: { readonly monotonicNowMs: () => number };
  readonly limits: MigrationLimits;
  readonly metrics?: MigrationMetrics;
};

export type RequestHandlerDependencies = {
  readonly workerId: string;
  /** The worker's cell: cell.stats names it, and migration moves keys out of it. */
  readonly cellId: string;
  readonly migration?: MigrationDependencies;
  readonly store: ConversationStore;
  readonly ownership: OwnershipView;
  readonly queue: KeyedSerialQueue;
  /** Stores and publishes sends, many per statement; a reply per send after its commit. */
  readonly sends: Pick<SendCommitter, "submit">;
  /** A single cell.send (not in a batch) that carries no budgetMs counts on its caller waiting this long. */
  readonly sendBudgetMs: number;
  /**
   * The clock of request deadlines: a request's budgetMs becomes a deadline on it when the request
   * arrives, and a request whose deadline passed before its key's turn is not started.
   */
  readonly monotonicNowMs: () => number;
  /** Takes the outbox rows (joined, receipt) of a change just committed and acked; MUST NOT wait for them to be relayed. */
  readonly relayOutbox: (conversationId: string, entries: readonly OutboxEntry[]) => void;
  /** The conversation's members changed here: cached member lists of it are stale. */
  readonly membersChanged: (conversationId: string) => void;
  /** Relays whatever a conversation's outbox holds (a conversation that moved in brings its pending rows). */
  readonly drainOutbox?: (conversationId: string) => void;
  /** Publishes one live delivery on the recipient's delivery subject; MUST keep publish order. */
  readonly publishDelivery: (delivery: Delivery) => void;
  readonly logger: Logger & { readonly error: (message: string, fields?: LogFields) => void };
  /** CELLWIRE_DIRECT_CONVERSATION_KEY: a cell.openDirect must name the id the edges derive with it. */
  readonly directConversationKey: string;
};

export class CellRequestHandler {
  private readonly migration: MigrationCoordinator | undefined;

  constructor(private readonly dependencies: RequestHandlerDependencies) {
    const { migration } = dependencies;
    this.migration =
      migration === undefined
        ? undefined
        : new MigrationCoordinator({
            cellId: dependencies.cellId,
            store: dependencies.store,
            directory: migration.directory,
            router: migration.router,
            clock: migration.clock,
            limits: migration.limits,
            ...(migration.metrics === undefined ? {} : { metrics: migration.metrics }),
            logger: dependencies.logger,
            turn: (key, write) => this.inTurn(key, write),
          });
  }

  /**
   * Handles one request payload. MUST be called in arrival order: requests for one key run in the order
   * of these calls. `respond` is called exactly once; the returned promise settles (never rejects) when
   * the request and its after-reply work are done.
   */
  handle(payload: string, respond: (reply: CellReply) => void): Promise<void> {
    const parsed = parseJson(payload);
    if (!parsed.ok) {
      this.dependencies.logger.warn(`worker ${this.dependencies.workerId} got a request that is not JSON`);
      respond(cellErrorReply({ kind: "bad_payload", reason: "$ is not valid JSON" }));
      return Promise.resolve();
    }
    return this.handleParsed(parsed.value, respond);
  }

  /** handle() for a parsed payload; `traceparent` reads its header's (0037) only for a line: nats decodes headers when asked. */
  handleParsed(input: unknown, respond: (reply: CellReply) => void, traceparent?: () => string | undefined): Promise<void> {
    const decoded = decode(cellRequestEnvelope, input);
    if (decoded.ok) return this.handleRequest(decoded.value.request, decoded.value.budgetMs, respond, traceparent);
    const reason = `${decoded.failure.path} ${decoded.failure.reason}`;
    this.dependencies.logger.warn(`worker ${this.dependencies.workerId} got a request that does not decode: ${reason}`);
    respond(cellErrorReply({ kind: "bad_payload", reason }));
    return Promise.resolve();
  }

  /** handleParsed() for a request already decoded (a page of a batch, docs/decisions/0042); the same ordering rule. */
  handleRequest(
    request: CellRequest,
    budgetMs: number | undefined,
    respond: (reply: CellReply) => void,
    traceparent?: () => string | undefined,
  ): Promise<void> {
    const { queue, workerId, ownership, logger } = this.dependencies;
    // Local to this process, from the caller's relative budget: the clocks of two processes differ.
    const deadlineAtMs = budgetMs === undefined ? Number.POSITIVE_INFINITY : this.dependencies.monotonicNowMs() + budgetMs;
    // Any worker counts the cell's rows: no key, no turn.
    if (request.type === "cell.stats") return this.stats(respond);
    // Dead letters are rows of the cell, not of a key: any worker lists or redrives them (the owners' sweepers relay them).
    if (request.type === "cell.deadLetters" || request.type === "cell.redriveDeadLetters") return this.deadLetters(request, respond);
    // Any worker reads membership rows for the edges' presence policy: no key's turn either.
    if (request.type === "cell.sharedPeers") return this.sharedPeers(request, respond);
    const key = cellRequestKey(request);
    if (!ownership.leaseHeld()) {
      respond(cellErrorReply({ kind: "lease_lapsed" }));
      return Promise.resolve();
    }
    // An empty ring (this worker's own lease not seen yet, and no other) does not turn a request away
    // here: reads are served, and a write is checked again in its turn (see writeRingEpoch).
    const ownerWorkerId = ownership.snapshot().ring.ownerOf(key);
    if (ownerWorkerId !== undefined && ownerWorkerId !== workerId) {
      respond(cellErrorReply({ kind: "not_owner", key, ownerWorkerId }));
      return Promise.resolve();
    }
    const invalid = invalidRequest(request, this.dependencies.directConversationKey);
    if (invalid !== undefined) {
      respond(cellErrorReply(invalid));
      return Promise.resolve();
    }
    if (request.type === "cell.send") {
      this.dependencies.sends.submit(request, budgetMs ?? this.dependencies.sendBudgetMs, respond);
      return Promise.resolve();
    }
    if (request.type === "cell.messagesAfter") return this.messagesAfter(request, key, respond, traceparent);
    if (request.type === "cell.migrate") {
      const migration = this.migration;
      if (migration === undefined) {
        respond(cellErrorReply({ kind: "error", error: new Error("this worker has no migration dependencies") }));
        return Promise.resolve();
      }
      // Outside the key's turn: the coordinator takes turns only for its writes here.
      return migration.migrate(request).then(respond);
    }
    const queued = queue.enqueue(key, () => this.run(request, deadlineAtMs, respond, traceparent));
    if (!queued.accepted) {
      respond(cellErrorReply({ kind: "overloaded", reason: queued.reason }));
      return Promise.resolve();
    }
    // run() catches everything itself; this only guards against a bug in it.
    return queued.result.catch((error: unknown) =>
      logger.error(`request handling failed: ${describeError(error)}`, { traceId: requestTraceId(traceparent?.()) }),
    );
  }

  /** Many sends in one request: each to the committer (ownership checked in its batch's turn), replies in order. */
  handleSendBatch(
    batch: CellSendBatch,
    respond: (replies: CellSendBatchReplies) => void,
    /** With tracing on: each send's context from the batch's headers (undefined where a send has none). */
    traceContexts?: readonly (TraceContext | undefined)[],
  ): void {
    const answerOf = orderedReplies(batch.sends.length, (replies) => respond({ type: "cell.sendBatchReplies", replies }));
    const tracing = traceContexts === undefined ? undefined : activeTracing();
    batch.sends.forEach((send, index) => {
      const answer = answerOf(index);
      if (tracing === undefined) {
        this.dependencies.sends.submit(send, batch.budgetMs, answer);
        return;
      }
      // The send's span on this worker, in its trace: from its arrival to its reply (its commit is linked).
      const span = tracing.startSpan("worker.send", { "cellwire.request.type": send.type }, traceContexts?.[index]);
      const answerTraced = (reply: CellReply): void => {
        tracing.endSpan(span, reply.type === "cell.error" ? reply.code : undefined);
        answer(reply);
      };
      this.dependencies.sends.submit(send, batch.budgetMs, answerTraced, tracing.contextOf(span));
    });
  }

  /** A page of a conversation's log for a member: a read, served without waiting for the key's turn. */
  private async messagesAfter(
    request: CellMessagesAfterRequest,
    key: string,
    respond: (reply: CellReply) => void,
    traceparent: (() => string | undefined) | undefined,
  ): Promise<void> {
    const { store, logger } = this.dependencies;
    try {
      const result = await store.messagesAfter({
        conversationId: request.conversationId,
        userId: request.userId,
        afterSeq: request.afterSeq,
        limit: request.limit,
      });
      if (result.outcome === "messages") {
        respond({
          type: "cell.messages",
          conversationId: request.conversationId,
          afterSeq: result.afterSeq,
          messages: result.messages,
          headSeq: result.headSeq,
        });
      } else if (result.outcome === "not_a_member") {
        respond(refused("not_a_member").reply);
      } else {
        respond(migrating("conversation", request.conversationId, key, result).reply);
      }
    } catch (error) {
      logger.error(`cell.messagesAfter on ${key} failed: ${describeError(error)}`, { traceId: requestTraceId(traceparent?.()) });
      respond(cellErrorReply({ kind: "error", error }));
    }
  }

  private async stats(respond: (reply: CellReply) => void): Promise<void> {
    const { store, cellId, logger } = this.dependencies;
    try {
      const stats = await store.stats();
      respond({ type: "cell.stats", cellId, ...stats });
    } catch (error) {
      logger.error(`cell.stats failed: ${describeError(error)}`);
      respond(cellErrorReply({ kind: "error", error }));
    }
  }

  private async deadLetters(
    request: CellDeadLettersRequest | CellRedriveDeadLettersRequest,
    respond: (reply: CellReply) => void,
  ): Promise<void> {
    const { store, cellId, logger } = this.dependencies;
    try {
      if (request.type === "cell.deadLetters") {
        respond({
          type: "cell.deadLetters",
          cellId,
          deadLetters: await store.deadLetters({ afterId: request.afterId, limit: request.limit }),
        });
        return;
      }
      const redriven = await store.redriveDeadLetters({ ids: request.ids });
      logger.info(`${redriven.length} dead letters of cell ${cellId} went back to the outbox`);
      respond({ type: "cell.redriven", cellId, rows: redriven.length });
    } catch (error) {
      logger.error(`${request.type} failed: ${describeError(error)}`);
      respond(cellErrorReply({ kind: "error", error }));
    }
  }

  private async sharedPeers(request: CellSharedPeersRequest, respond: (reply: CellReply) => void): Promise<void> {
    const { store, logger } = this.dependencies;
    try {
      const peerUserIds = await store.sharedPeers(request.userId, request.peerUserIds);
      respond({ type: "cell.sharedPeers", userId: request.userId, peerUserIds });
    } catch (error) {
      logger.error(`cell.sharedPeers failed: ${describeError(error)}`);
      respond(cellErrorReply({ kind: "error", error }));
    }
  }

  /**
   * A move for the frozen-key sweeper, as cell.migrate runs it, without the request's decoding and
   * ownership check (the sweeper picks keys this worker owns; the move's writes are fenced anyway).
   */
  resumeMigration(request: CellMigrateRequest): Promise<CellReply> {
    const migration = this.migration;
    if (migration === undefined)
      return Promise.resolve(cellErrorReply({ kind: "error", error: new Error("this worker has no migration dependencies") }));
    return migration.migrate(request);
  }

  /** Whether this worker is moving the key (its ring key) now. */
  isMigrating(ringKey: string): boolean {
    return this.migration?.isMigrating(ringKey) ?? false;
  }

  /** Resolves once the migrations this worker drives have answered (a stopping worker waits for them). */
  whenMigrationsIdle(): Promise<void> {
    return this.migration?.whenIdle() ?? Promise.resolve();
  }

  /** The migration coordinator's writes here: in the key's turn, fenced by the epoch of that moment. */
  private inTurn: KeyTurn = async (key, write) => {
    const queued = this.dependencies.queue.enqueue(key, async () => {
      const writing = this.writeRingEpoch(key);
      if ("refusal" in writing) return { ok: false as const, reply: writing.refusal.reply };
      return { ok: true as const, value: await write(writing.ringEpoch), epoch: writing.ringEpoch };
    });
    if (!queued.accepted) return { ok: false, reply: cellErrorReply({ kind: "overloaded", reason: queued.reason }) };
    return queued.result;
  };

  private async run(
    request: CellRequest,
    deadlineAtMs: number,
    respond: (reply: CellReply) => void,
    traceparent: (() => string | undefined) | undefined,
  ): Promise<void> {
    const { logger, monotonicNowMs } = this.dependencies;
    // Its caller has stopped waiting: doing it now would only make an effect nobody is told of (a group
    // created after the client heard it failed) and delay the requests behind it (docs/decisions/0020).
    if (monotonicNowMs() >= deadlineAtMs) {
      respond(
        cellErrorReply({
          kind: "deadline_exceeded",
          detail: `the caller's deadline passed while ${request.type} waited for its turn; it was not started`,
        }),
      );
      return;
    }
    let outcome: Outcome;
    try {
      outcome = await this.perform(request);
    } catch (error) {
      logger.error(`${request.type} on ${cellRequestKey(request)} failed: ${describeError(error)}`, {
        traceId: requestTraceId(traceparent?.()),
      });
      respond(cellErrorReply({ kind: "error", error }));
      return;
    }
    respond(outcome.reply);
    if (outcome.afterReply === undefined) return;
    try {
      await outcome.afterReply();
    } catch (error) {
      // What is committed stays: outbox rows are re-driven by the sweeper, and a device that misses a live
      // delivery sees the gap in mailbox seqs and pages the mailbox.
      logger.warn(`after ${request.type} on ${cellRequestKey(request)}: ${describeError(error)}`, {
        traceId: requestTraceId(traceparent?.()),
      });
    }
  }

  /**
   * The ring epoch to write `key` under, read at the moment the write runs (not when the request arrived), or
   * why this worker must not write it now: its lease lapsed, or its current ring gives the key to another
   * worker or to nobody. Checking ownership on the same snapshot that gives the epoch matters: a worker
   * whose ring moved on must not write with the newer epoch of a ring on which it no longer owns the key.
   */
  private writeRingEpoch(key: string): { readonly ringEpoch: number } | { readonly refusal: Outcome } {
    const { ownership, workerId } = this.dependencies;
    if (!ownership.leaseHeld()) return { refusal: { reply: cellErrorReply({ kind: "lease_lapsed" }) } };
    const { ring, ringEpoch: epoch } = ownership.snapshot();
    const ownerWorkerId = ring.ownerOf(key);
    if (ownerWorkerId !== workerId) return { refusal: { reply: cellErrorReply({ kind: "not_owner", key, ownerWorkerId }) } };
    return { ringEpoch: epoch };
  }

  private fenced(key: string, ringEpoch: number): Outcome {
    this.dependencies.logger.warn(`worker ${this.dependencies.workerId} was fenced on ${key}: written under an epoch after ${ringEpoch}`);
    this.dependencies.ownership.fenced?.(key, ringEpoch);
    return { reply: cellErrorReply({ kind: "fenced", key, epoch: ringEpoch }) };
  }

  /**
   * Runs a request in its key's turn: one case per request type, each a store call and the mapper of its
   * result (request-outcomes.ts); writes go through fencedWrite.
   */
  private async perform(request: CellRequest): Promise<Outcome> {
    const { store, relayOutbox, publishDelivery } = this.dependencies;
    const key = cellRequestKey(request);
    switch (request.type) {
      case "cell.openDirect": {
        const { conversationId, userId, peerUserId } = request;
        return this.conversationWrite(key, (ringEpoch) => store.openDirect({ conversationId, userId, peerUserId, epoch: ringEpoch }));
      }
      case "cell.createGroup": {
        const { conversationId, creatorUserId, title, memberUserIds } = request;
        return this.conversationWrite(key, (ringEpoch) =>
          store.createGroup({ conversationId, creatorUserId, title, memberUserIds, epoch: ringEpoch }),
        );
      }
      case "cell.addMembers": {
        const { conversationId, userId, userIds } = request;
        const outcome = await this.conversationWrite(key, (ringEpoch) =>
          store.addMembers({ conversationId, userId, userIds, epoch: ringEpoch }),
        );
        // Whatever the outcome: a reload of the member list costs one read.
        this.dependencies.membersChanged(conversationId);
        return outcome;
      }
      case "cell.history": {
        const { conversationId, userId, beforeSeq, limit } = request;
        return historyOutcome(conversationId, key, await store.history({ conversationId, userId, beforeSeq, limit }));
      }
      case "cell.appendMailbox":
        return this.fencedWrite(
          key,
          (ringEpoch) => store.appendMailbox({ userId: request.userId, eventId: request.eventId, event: request.event, epoch: ringEpoch }),
          (result) => appendedOutcome(request, key, result, publishDelivery),
        );
      case "cell.members":
        return { reply: await membersReply(store, request, key) };
      case "cell.receipt": {
        const { conversationId, userId, position, seq } = request;
        return this.fencedWrite(
          key,
          (ringEpoch) =>
            store.markReceipt({ conversationId, userId, position, seq, fanOutMembersMax: receiptFanOutMembersMax, epoch: ringEpoch }),
          (result) => receiptOutcome(request, key, result, relayOutbox),
        );
      }
      case "cell.mailboxPage": {
        const page = await store.mailboxPage({ userId: request.userId, afterSeq: request.afterSeq, limit: request.limit });
        return mailboxPageOutcome(request, key, page);
      }
      case "cell.import": {
        const { type: _type, fromCellId: _fromCellId, ...page } = request;
        const effects = { warn: (message: string) => this.dependencies.logger.warn(message), drainOutbox: this.dependencies.drainOutbox };
        return this.fencedWrite(
          key,
          (ringEpoch) => store.importPage({ ...page, epoch: ringEpoch }),
          (result) => importedOutcome(request, key, result, effects),
        );
      }
      case "cell.send":
      case "cell.messagesAfter":
      case "cell.migrate":
      case "cell.stats":
      case "cell.deadLetters":
      case "cell.redriveDeadLetters":
      case "cell.sharedPeers":
        // handle() answers these without queueing them.
        throw new Error(`${request.type} reached the keyed queue`);
    }
  }

  /** cell.openDirect, cell.createGroup, cell.addMembers: a fenced write answered with the conversation. */
  private conversationWrite(key: string, write: (ringEpoch: number) => Promise<ConversationResult<StoreRefusal>>): Promise<Outcome> {
    return this.fencedWrite(key, write, (result) => conversationOutcome(key, result, this.dependencies.relayOutbox));
  }

  /**
   * Every write of the keyed queue: fenced by the epoch of the ring that gives this worker the key at the
   * moment it runs (writeRingEpoch), refused before the store when it must not write the key, answered
   * `fenced` when the store found the key written under a later epoch, else mapped to its reply.
   */
  private async fencedWrite<Result extends { readonly outcome: string }>(
    key: string,
    write: (ringEpoch: number) => Promise<Result | Fenced>,
    map: (result: Result) => Outcome,
  ): Promise<Outcome> {
    const writing = this.writeRingEpoch(key);
    if ("refusal" in writing) return writing.refusal;
    const result = await write(writing.ringEpoch);
    return isFenced(result) ? this.fenced(key, writing.ringEpoch) : map(result);
  }
}

function isFenced<Result extends { readonly outcome: string }>(result: Result | Fenced): result is Fenced {
  return result.outcome === "fenced";
}
