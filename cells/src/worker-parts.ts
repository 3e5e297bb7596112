// The parts of a worker, each built by a named function from the worker's config and what is built
// before it (worker.ts calls them in order): the cell's pools, the relay path (routers, home cells,
// mailbox appender, outbox relay), the request path (queue, send committer, request handler), the
// frozen-key sweeper, the request subscriptions, the lease and the database watchdog. Each registers its
// undo, so a start that fails part-way closes what it opened, and stopWorker stops them in order.
import pg from "pg";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  activeTracing,
  DirectoryCache,
  DirectoryClient,
  directoryHomes,
  devDirectConversationKey,
  encodeJson,
  routerDefaults,
  startRouter,
  subscribeDirectoryChanges,
  timedCellRequests,
  traceparentOf,
  type BackoffPolicy,
  type RingRoutingOptions,
  type RunningRouter,
  type Clock,
  type MembershipWatcher,
  type ServiceLogger,
} from "@cellwire/cluster";
import {
  cellMailboxPageBatch,
  cellSendBatch,
  decode,
  deliveriesSubject,
  isRecord,
  parseJson,
  workerChannels,
  workerRequestSubjects,
  type CellReply,
  type CellBatchReplies,
  type WorkerChannel,
} from "@cellwire/protocol";
import {
  databaseUnreachableMsDefault,
  frozenSweepIntervalMsDefault,
  frozenSweepKeysMaxDefault,
  frozenSweepResumesMaxDefault,
  memberCacheConversationsMaxDefault,
  migrationRequestTimeoutMsDefault,
  migrationsInFlightMaxDefault,
  postgresTimeoutsDefault,
  relayFailuresMaxDefault,
  relayRetryDelayMsMaxDefault,
  relayWatchIdleMsDefault,
  relayRetryDelayMsMinDefault,
  sendBatchMaxDefault,
  sendBusyWindowMsDefault,
  sendBusySendsMinDefault,
  sendRetryWindowMsDefault,
  sendLingerMsDefault,
  sendQueueWaitMsMaxDefault,
  sendsPendingMaxDefault,
  type WorkerConfig,
} from "./config.ts";
import { cellErrorReply } from "./cell-error-reply.ts";
import { FrozenKeySweeper } from "./frozen-key-sweeper.ts";
import { serveInventory } from "./inventory-responder.ts";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { MailboxAppender } from "./mailbox-appender.ts";
import { eventBatch, MessagePublisher } from "./message-publisher.ts";
import { OutboxRelay } from "./outbox-relay.ts";
import { offChannelRefusal } from "./request-channel.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { SendCommitter } from "./send-committer.ts";
import { handleTraced } from "./traced-request.ts";
import { cellPoolConfig } from "./store/database.ts";
import { describeError } from "./store/errors.ts";
import { sendSessionOptions } from "./store/postgres-sends.ts";
import type { ConversationStore } from "./store/store.ts";
import type { WorkerOwnership } from "./worker-ownership.ts";
import { directoryRequestTiming, type WorkerCounters } from "./worker-metrics.ts";
import { serveMailboxPageBatch } from "./mailbox-page-batch.ts";

/** The relay's retries of one mailbox append (on another owner after not_owner or silence). */
const relayRetryBackoff: BackoffPolicy = { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2 };
/** Batches one relay drains before leaving the rest to the next relay or the sweeper. */
const relayDrainBatchesMax = 4;
/** Attempts of one cell.import page (the router retries on another owner after not_owner or silence). */
const migrationImportAttemptsMax = 3;
/** Attempts of the directory flip while the directory does not answer (moveEntry is idempotent). */
const migrationFlipAttemptsMax = 3;
/** Pages (of importPageItemsMax items) a move copies before it freezes the key: 200,000 mailbox events or messages. */
const migrationPrecopyPagesMax = 1000;
/** cell.inventory pages one worker reads at once: a rebuilding directory asks one at a time per cell and kind. */
const inventoryPagesInFlightMax = 4;
/** A cell.send outside a batch (tests, tools) counts on its caller waiting this long, as edges do. */
const singleSendBudgetMs = 10_000;

export type WorkerDependencies = { readonly clock: Clock; readonly random: () => number; readonly sleep: (ms: number) => Promise<void> };

/** Steps that close what a start opened, run in reverse when the start fails part-way. */
export type Undo = (() => Promise<void>)[];

/** What every builder after the connection and the store reads. */
export type WorkerContext = {
  readonly config: WorkerConfig;
  readonly logger: ServiceLogger;
  readonly dependencies: WorkerDependencies;
  readonly connection: NatsConnection;
  readonly store: ConversationStore;
  readonly ownership: WorkerOwnership;
  /** The worker's watch of its own cell's membership: its routers route to this cell through it too. */
  readonly watcher: MembershipWatcher;
  /** The worker's counters and histograms (worker-metrics.ts), fed by the parts below. */
  readonly metrics: WorkerCounters;
  readonly undo: Undo;
};

export type CellPools = {
  /** Requests' statements. */
  readonly pool: pg.Pool;
  /** The group commit's one connection. */
  readonly sendPool: pg.Pool;
  /** The database watchdog's probes. */
  readonly probePool: pg.Pool;
  /** WORKER_DATABASE_UNREACHABLE_MS as resolved: the watchdog's bound, which also caps a probe's waits. */
  readonly unreachableMs: number;
};

/** The cell database's three pools, each with its own role and bounds. */
export function openCellPools(databaseUrl: string, config: WorkerConfig, logger: ServiceLogger, undo: Undo): CellPools {
  // Every wait on Postgres is bounded, so a stuck query, lock or network cannot hold a conversation's turn.
  const timeouts = config.postgresTimeouts ?? postgresTimeoutsDefault;
  const pool = new pg.Pool(cellPoolConfig(databaseUrl, config.poolSize, timeouts));
  // An idle pooled client whose server restarts emits 'error'; unhandled, it would end the process.
  pool.on("error", (error) => logger.warn(`idle Postgres connection failed: ${describeError(error)}`));
  undo.push(() => pool.end());
  // The group commit stores one batch at a time: one connection of its own, with the session settings
  // its statement needs (sendSessionOptions), that never waits behind reads for a pool slot.
  const sendPool = new pg.Pool(cellPoolConfig(databaseUrl, 1, timeouts, sendSessionOptions));
  sendPool.on("error", (error) => logger.warn(`idle Postgres connection (sends) failed: ${describeError(error)}`));
  undo.push(() => sendPool.end());
  // The watchdog's probes have a connection of their own: a pool busy with slow requests is not an
  // unreachable database. A probe waits no longer than the bound it serves.
  const unreachableMs = config.databaseUnreachableMs ?? databaseUnreachableMsDefault;
  const probeTimeoutMs = Math.min(timeouts.queryTimeoutMs, unreachableMs);
  const probePool = new pg.Pool(
    cellPoolConfig(databaseUrl, 1, {
      ...timeouts,
      connectTimeoutMs: Math.min(timeouts.connectTimeoutMs, unreachableMs),
      queryTimeoutMs: probeTimeoutMs,
      statementTimeoutMs: probeTimeoutMs,
    }),
  );
  probePool.on("error", (error) => logger.warn(`idle Postgres connection (probe) failed: ${describeError(error)}`));
  undo.push(() => probePool.end());
  return { pool, sendPool, probePool, unreachableMs };
}

/**
 * A router to the owners of keys in any cell (this one included), stopped with the worker. Its own
 * toHome asks the directory uncached; the relay's appender routes over its home cache (see buildRelayPath).
 */
function startWorkerRouter(
  context: WorkerContext,
  directory: DirectoryClient,
  timing: Pick<RingRoutingOptions, "requestTimeoutMs" | "attemptsMax" | "deadlineMs">,
): RunningRouter {
  const { config, dependencies, logger, watcher } = context;
  const router = startRouter(
    context.connection,
    {
      ring: {
        namespace: config.namespace,
        leaseMs: config.leaseMs,
        retryBackoff: relayRetryBackoff,
        watchedCellsMax: config.relayWatchedCellsMax,
        // Its own cell through the watcher the worker already runs; other cells only while used.
        sharedWatchers: new Map([[config.cellId, watcher]]),
        watchIdleMs: config.relayWatchIdleMs ?? relayWatchIdleMsDefault,
        ...timing,
      },
      homes: directoryHomes(directory),
    },
    { clock: dependencies.clock, logger, random: dependencies.random, sleep: dependencies.sleep },
  );
  context.undo.push(async () => router.stop());
  return router;
}

export type RelayPath = {
  /** Routes the relay's mailbox appends. */
  readonly router: RunningRouter;
  /** Keeps the cached home cells in step with the directory's moves. */
  readonly directoryChanges: Subscription;
  readonly relay: OutboxRelay;
};

/**
 * The outbox's way to its recipients' mailboxes, in any cell: a router, the home-cell cache (kept in step
 * with directory.changed), the MailboxAppender over them, and the OutboxRelay that drives it.
 */
export function buildRelayPath(context: WorkerContext, directory: DirectoryClient): RelayPath {
  const { config, dependencies, logger, connection, store, ownership, undo, watcher } = context;
  const { clock } = dependencies;
  const router = startWorkerRouter(context, directory, {
    requestTimeoutMs: config.relayRequestTimeoutMs,
    attemptsMax: config.relayAttemptsMax,
  });
  const homeCells = new DirectoryCache({
    entriesMax: config.homeCellCacheUsersMax,
    ttlMs: config.homeCellCacheTtlMs,
    nowMs: () => clock.monotonicNowMs(),
    // The relay's appends in flight bound its lookups already (relays × recipients each); no further limit.
    fetchesInFlightMax: config.relaysInFlightMax * config.relayRecipientsConcurrencyMax,
    // A user's move heard of is cached even when the user is not: the relay's next append to a moved user
    // (a migration moves the users whose mailboxes are busy) then goes to the new home without a lookup.
    // This is the worker's behaviour from before the caches were one; docs/decisions/0031 says what it costs.
    changesOfUncachedKeys: "keep",
    onLookup: context.metrics.directoryCacheLookup,
  });
  // A user moved to another cell: the cached home follows at once rather than at the end of its TTL.
  const directoryChanges = subscribeDirectoryChanges(
    connection,
    config.namespace,
    (entry) => {
      if (entry.kind === "user") homeCells.changed(entry);
    },
    (message) => logger.warn(message),
  );
  undo.push(async () => directoryChanges.unsubscribe());
  // The worker's clock and randomness drive the appender's waits for a moving mailbox, as they drive the rest.
  // The appender's Router keeps the relay's home cache; each of its cell requests goes to the ring by toCell,
  // timed and its failures counted by kind and code.
  const cellRequests = timedCellRequests(router, context.metrics.cellRequests, () => clock.monotonicNowMs());
  const appender = new MailboxAppender(directory, cellRequests, homeCells, {
    options: routerDefaults,
    dependencies: { monotonicNowMs: () => clock.monotonicNowMs(), random: dependencies.random, sleep: dependencies.sleep },
  });
  const relay = new OutboxRelay({
    store,
    appender,
    ownership,
    random: dependencies.random,
    logger,
    limits: {
      batchMax: config.outboxBatchMax,
      drainBatchesMax: relayDrainBatchesMax,
      recipientsConcurrencyMax: config.relayRecipientsConcurrencyMax,
      relaysInFlightMax: config.relaysInFlightMax,
      pendingMax: config.relayPendingMax,
      cleanConversationsMax: config.relayCleanConversationsMax,
      retryAfterMs: config.outboxRetryAfterMs,
      sweepIntervalMs: config.outboxSweepIntervalMs,
      sweepPagesMax: config.outboxSweepPagesMax,
      retryDelayMsMin: config.relayRetryDelayMsMin ?? relayRetryDelayMsMinDefault,
      retryDelayMsMax: config.relayRetryDelayMsMax ?? relayRetryDelayMsMaxDefault,
      failuresMax: config.relayFailuresMax ?? relayFailuresMaxDefault,
    },
    metrics: context.metrics.outboxRelay,
  });
  undo.push(async () => void (await relay.stop(0)));
  // Keys that move away and back may have been written by another worker meanwhile.
  watcher.onChange(() => relay.forgetCleanConversations());
  return { router, directoryChanges, relay };
}

export type RequestPath = {
  readonly queue: KeyedSerialQueue;
  readonly sends: SendCommitter;
  readonly handler: CellRequestHandler;
  /** Migration's own router: a page of up to 512 KiB, or a flip, may take longer than a relay's attempt. */
  readonly migrationRouter: RunningRouter;
};

/** What serves the requests of the keys this worker owns: the keyed queue, the send committer, the handler. */
export function buildRequestPath(context: WorkerContext, relay: OutboxRelay): RequestPath {
  const { config, dependencies, logger, connection, store, ownership } = context;
  const { clock } = dependencies;
  // Migration has its own directory client and router: a page of up to 512 KiB, or a flip, may take
  // longer than the relay's short per-attempt timeout allows.
  const migrationRequestTimeoutMs = config.migrationRequestTimeoutMs ?? migrationRequestTimeoutMsDefault;
  const timing = directoryRequestTiming(context.metrics, clock);
  const migrationDirectory = new DirectoryClient(connection, config.namespace, migrationRequestTimeoutMs, timing);
  const migrationRouter = startWorkerRouter(context, migrationDirectory, {
    requestTimeoutMs: migrationRequestTimeoutMs,
    deadlineMs: migrationRequestTimeoutMs,
    attemptsMax: migrationImportAttemptsMax,
  });
  const queue = new KeyedSerialQueue({ pendingPerKeyMax: config.pendingPerConversationMax, pendingTotalMax: config.pendingTotalMax });
  const deliveries = deliveriesSubject(config.namespace);
  const publisher = new MessagePublisher({
    members: (conversationId) => store.members(conversationId),
    publish: (payload, headers) => connection.publish(deliveries, payload, headers === undefined ? undefined : { headers }),
    logger,
    conversationsMax: config.memberCacheConversationsMax ?? memberCacheConversationsMaxDefault,
  });
  const sends = buildSendCommitter(context, publisher);
  const handler = new CellRequestHandler({
    workerId: config.workerId,
    cellId: config.cellId,
    migration: {
      directory: migrationDirectory,
      // Import pages name their target cell: toCell, with migration's own retry rules around it.
      router: timedCellRequests(migrationRouter, context.metrics.cellRequests, () => clock.monotonicNowMs()),
      clock,
      limits: {
        migrationsInFlightMax: config.migrationsInFlightMax ?? migrationsInFlightMaxDefault,
        flipAttemptsMax: migrationFlipAttemptsMax,
        precopyPagesMax: migrationPrecopyPagesMax,
      },
      metrics: context.metrics.migration,
    },
    store,
    // The ring and its epoch are read afresh at each check: a write carries the epoch of the ring on
    // which this worker owns the key at the moment the write runs.
    ownership,
    queue,
    sends,
    sendBudgetMs: singleSendBudgetMs,
    monotonicNowMs: () => clock.monotonicNowMs(),
    membersChanged: (conversationId) => publisher.forget(conversationId),
    relayOutbox: (conversationId, entries) => relay.relayStored(conversationId, entries),
    drainOutbox: (conversationId) => relay.drain(conversationId),
    publishDelivery: (delivery) => connection.publish(deliveries, eventBatch(delivery)),
    logger,
    directConversationKey: config.directConversationKey ?? devDirectConversationKey,
  });
  return { queue, sends, handler, migrationRouter };
}

/** The group commit of sends, publishing each committed batch's messages. */
function buildSendCommitter(context: WorkerContext, publisher: MessagePublisher): SendCommitter {
  const { config, dependencies, logger, store, ownership } = context;
  return new SendCommitter({
    workerId: config.workerId,
    store,
    ownership,
    publish: (messages) => publisher.publish(messages),
    monotonicNowMs: () => dependencies.clock.monotonicNowMs(),
    logger,
    limits: {
      batchSendsMax: config.sendBatchMax ?? sendBatchMaxDefault,
      pendingSendsMax: config.sendsPendingMax ?? sendsPendingMaxDefault,
      queueWaitMsMax: config.sendQueueWaitMsMax ?? sendQueueWaitMsMaxDefault,
    },
    linger: {
      lingerMs: config.sendLingerMs ?? sendLingerMsDefault,
      busyWindowMs: config.sendBusyWindowMs ?? sendBusyWindowMsDefault,
      busySendsMin: config.sendBusySendsMin ?? sendBusySendsMinDefault,
      setTimer: (ms, callback) => {
        const timer = setTimeout(callback, ms);
        return () => clearTimeout(timer);
      },
    },
    retry: { windowMs: config.sendRetryWindowMs ?? sendRetryWindowMsDefault, random: dependencies.random, sleep: dependencies.sleep },
    metrics: context.metrics.sendCommitter,
  });
}

/** Resumes moves whose mover died, so a key frozen by a killed worker does not wait for a new cell.migrate. */
export function buildFrozenKeySweeper(context: WorkerContext, handler: CellRequestHandler): FrozenKeySweeper {
  const { config, dependencies, logger, store, ownership } = context;
  const sweeper = new FrozenKeySweeper({
    store,
    owns: ownership.owns,
    migrating: (ringKey) => handler.isMigrating(ringKey),
    migrate: (request) => handler.resumeMigration(request),
    clock: dependencies.clock,
    logger,
    limits: {
      sweepIntervalMs: config.frozenSweepIntervalMs ?? frozenSweepIntervalMsDefault,
      keysMax: config.frozenSweepKeysMax ?? frozenSweepKeysMaxDefault,
      // Each resume takes a migration slot; more at once would only be refused (overloaded).
      resumesMax: Math.min(
        config.frozenSweepResumesMax ?? frozenSweepResumesMaxDefault,
        config.migrationsInFlightMax ?? migrationsInFlightMaxDefault,
      ),
    },
  });
  context.undo.push(() => sweeper.stop());
  return sweeper;
}

/**
 * The worker's subscriptions: one per request channel on its subject, and the cell's inventory (a
 * directory that lost its store rebuilds from what the cells hold, docs/decisions/0023).
 */
export function serveRequests(context: WorkerContext, subject: string, handler: CellRequestHandler): Subscription[] {
  const { config, connection, store, logger } = context;
  const inventory = serveInventory(
    connection,
    config.namespace,
    { cellId: config.cellId, weight: config.cellWeight },
    store,
    inventoryPagesInFlightMax,
    logger,
  );
  const requestSubjects = workerRequestSubjects(subject);
  const subscriptions = [...workerChannels.map((channel) => serveChannel(context, channel, requestSubjects[channel], handler)), inventory];
  context.undo.push(async () => {
    for (const subscription of subscriptions) subscription.unsubscribe();
  });
  return subscriptions;
}

const textDecoder = new TextDecoder();

/**
 * One subscription per channel (docs/decisions/0015), its callback bound to its channel: the NATS
 * permissions decide who may publish on it, and a kind that belongs to another channel is refused. The
 * callback runs synchronously per message, in arrival order, which is what handle() requires. The payload
 * is parsed once: a batch of sends goes to the committer, a batch of pages to handle() page by page,
 * anything else to handle().
 */
function serveChannel(context: WorkerContext, channel: WorkerChannel, channelSubject: string, handler: CellRequestHandler): Subscription {
  const { config, connection, logger } = context;
  const { requests } = context.metrics;
  return connection.subscribe(channelSubject, {
    callback: (error, message) => {
      if (error !== null) {
        logger.warn(`subscription ${channelSubject} failed: ${error.message}`);
        return;
      }
      // A reply after the connection moved to another server goes nowhere: that server never delivered the
      // request, so the shipped permissions (docs/decisions/0015) refuse its reply subject, and the requester
      // ended the request at its own reconnect or retries it at its attempt's timeout (requests are
      // idempotent). It is dropped rather than refused (a "Permissions Violation" per late reply).
      const serverId = connection.info?.server_id;
      // Counted when answered: the kind is the request's type, read below once the payload is parsed.
      const receivedAtMs = performance.now();
      let kind: unknown;
      const respond = (reply: CellReply | CellBatchReplies): void => {
        requests.answered(kind, reply, receivedAtMs);
        if (connection.info?.server_id !== serverId) return;
        if (!message.respond(encodeJson(reply))) logger.warn(`a request on ${channelSubject} had no reply subject`);
      };
      const parsed = parseJson(textDecoder.decode(message.data));
      if (!parsed.ok) {
        respond(cellErrorReply({ kind: "bad_payload", reason: "$ is not valid JSON" }));
        return;
      }
      const type = isRecord(parsed.value) ? parsed.value["type"] : undefined;
      kind = type;
      const refusal = offChannelRefusal(type, channel);
      if (refusal !== undefined) {
        logger.warn(`worker ${config.workerId} refused ${String(type).slice(0, 40)} on ${channelSubject}`);
        respond(refusal);
        return;
      }
      // Tracing on: a request continues its headers' trace (a batch: each send's); off: their traceparents, as strings (0037).
      const tracing = activeTracing();
      if (type === "cell.sendBatch") {
        const batch = decode(cellSendBatch, parsed.value);
        if (!batch.ok) respond(cellErrorReply({ kind: "bad_payload", reason: `${batch.failure.path} ${batch.failure.reason}` }));
        // Tracing off: its sends' trace ids are derived from the sends when a line needs them (0037).
        else if (tracing === undefined) handler.handleSendBatch(batch.value, respond);
        else handler.handleSendBatch(batch.value, respond, tracing.extractEach(message.headers, batch.value.sends.length));
        return;
      }
      if (type === "cell.mailboxPageBatch") {
        const batch = decode(cellMailboxPageBatch, parsed.value);
        if (!batch.ok) respond(cellErrorReply({ kind: "bad_payload", reason: `${batch.failure.path} ${batch.failure.reason}` }));
        else if (tracing === undefined) serveMailboxPageBatch(handler, batch.value, respond);
        else
          serveMailboxPageBatch(handler, batch.value, respond, {
            tracing,
            contexts: tracing.extractEach(message.headers, batch.value.pages.length),
          });
        return;
      }
      if (tracing === undefined) void handler.handleParsed(parsed.value, respond, () => traceparentOf(message.headers));
      else
        void handleTraced(
          tracing,
          tracing.extract(message.headers),
          String(type),
          (traced) => handler.handleParsed(parsed.value, traced),
          respond,
        );
    },
  });
}
