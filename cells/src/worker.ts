// A cell worker process, in-process startable: it prepares the cell's database, registers the cell with
// the directory, joins the cell's ring with a lease, serves requests for the keys it owns (conversations
// and users' mailboxes), and relays its conversations' outbox rows to the recipients' mailbox owners.
import pg from "pg";
import {
  BoundedCache,
  CellRouter,
  DirectoryClient,
  LeaseHolder,
  MembershipWatcher,
  UnavailableError,
  backoffDelayMs,
  anonymousNatsAccess,
  connectNats,
  homeRouterDefaults,
  leaseExpiryCheckIntervalMs,
  sleep,
  decodeMessage,
  devDirectConversationKey,
  encodeJson,
  openMembershipBucket,
  systemClock,
  type BackoffPolicy,
  type CellRouterOptions,
  type Clock,
  type ServiceLogger,
} from "@cellwire/cluster";
import {
  cellSendBatch,
  decode,
  deliveriesSubject,
  directoryChange,
  directoryChangesSubject,
  isRecord,
  parseJson,
  workerChannels,
  workerRequestSubjects,
  workerSubject,
  type WorkerChannel,
  type WorkerLease,
} from "@cellwire/protocol";
import {
  databaseUnreachableMsDefault,
  frozenSweepIntervalMsDefault,
  frozenSweepKeysMaxDefault,
  frozenSweepResumesMaxDefault,
  memberCacheConversationsMaxDefault,
  migrationRequestTimeoutMsDefault,
  migrationsInFlightMaxDefault,
  postgresProbeIntervalMsDefault,
  postgresTimeoutsDefault,
  relayFailuresMaxDefault,
  relayRetryDelayMsMaxDefault,
  relayRetryDelayMsMinDefault,
  sendBatchMaxDefault,
  sendBusyWindowMsDefault,
  sendRetryWindowMsDefault,
  sendLingerMsDefault,
  sendQueueWaitMsMaxDefault,
  sendsPendingMaxDefault,
  type WorkerConfig,
} from "./config.ts";
import { FrozenKeySweeper } from "./frozen-key-sweeper.ts";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { eventBatch, MessagePublisher } from "./message-publisher.ts";
import { SendCommitter } from "./send-committer.ts";
import { cellErrorReply } from "./cell-error-reply.ts";
import { MailboxAppender, UserHomeCache } from "./mailbox-appender.ts";
import { OutboxRelay } from "./outbox-relay.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { serveInventory } from "./inventory-responder.ts";
import { offChannelRefusal } from "./request-channel.ts";
import { DatabaseWatchdog } from "./database-watchdog.ts";
import { cellPoolConfig, ensureCellDatabase } from "./store/database.ts";
import { describeError } from "./store/errors.ts";
import { PostgresConversationStore } from "./store/postgres-store.ts";
import { sendSessionOptions } from "./store/postgres-sends.ts";

export type RunningWorker = {
  readonly workerId: string;
  /** Stops taking requests, finishes those in flight, gives up the lease and closes connections. Idempotent. */
  readonly stop: () => Promise<void>;
};

/** One registration attempt waits this long for the directory before the next. */
const directoryRequestTimeoutMs = 2000;
const directoryRetryBackoff: BackoffPolicy = { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 };
/** Full jitter can draw ~0 ms; a floor keeps a silent directory from being asked in a tight loop. */
const directoryRetryDelayMinMs = 25;
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

type Dependencies = { readonly clock: Clock; readonly random: () => number; readonly sleep: (ms: number) => Promise<void> };
const defaultDependencies: Dependencies = {
  clock: systemClock,
  random: Math.random,
  sleep,
};

export async function startWorker(
  config: WorkerConfig,
  logger: ServiceLogger,
  dependencies: Dependencies = defaultDependencies,
): Promise<RunningWorker> {
  const { clock } = dependencies;
  // Undone in reverse order when the start fails part-way.
  const undo: (() => Promise<void>)[] = [];
  try {
    const databaseUrl = await ensureCellDatabase(config.postgresAdminUrl, config.namespace, config.cellId);
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

    const connection = await connectNats(
      [...config.natsServers],
      `cellwire-worker-${config.workerId}`,
      logger,
      config.natsAccess ?? anonymousNatsAccess("worker"),
    );
    undo.push(() => connection.close());

    const directory = new DirectoryClient(connection, config.namespace, directoryRequestTimeoutMs);
    await registerCell(directory, config, logger, dependencies);

    const bucket = await openMembershipBucket(
      connection,
      config.namespace,
      config.cellId,
      config.leaseMs,
      config.membershipBucketReplicas ?? 1,
    );
    const watcher = new MembershipWatcher(bucket, config.cellId, leaseExpiryCheckIntervalMs(config.leaseMs), clock, logger);
    await watcher.start();
    undo.push(async () => watcher.stop());
    await watcher.ready;

    const store = new PostgresConversationStore(pool, {}, sendPool);
    let leaseHolder: LeaseHolder | undefined;
    let watchdog: DatabaseWatchdog | undefined;
    const leaseHeld = (): boolean => leaseHolder === undefined || (leaseHolder.holds() && (watchdog === undefined || watchdog.serving));

    /** A router to the owners of keys in any cell (this one included), stopped with the worker. */
    const cellRouter = (timing: Pick<CellRouterOptions, "requestTimeoutMs" | "attemptsMax" | "deadlineMs">): CellRouter => {
      const created = new CellRouter(
        connection,
        {
          namespace: config.namespace,
          leaseMs: config.leaseMs,
          retryBackoff: relayRetryBackoff,
          watchedCellsMax: config.relayWatchedCellsMax,
          ...timing,
        },
        clock,
        logger,
        dependencies.random,
        dependencies.sleep,
      );
      undo.push(async () => created.stop());
      return created;
    };
    // Relays reach mailbox owners in any cell, this one included.
    const router = cellRouter({ requestTimeoutMs: config.relayRequestTimeoutMs, attemptsMax: config.relayAttemptsMax });
    const homeCells = new UserHomeCache(
      new BoundedCache(config.homeCellCacheUsersMax, config.homeCellCacheTtlMs, () => clock.monotonicNowMs()),
    );
    // A user moved to another cell: the cached home follows at once rather than at the end of its TTL.
    const directoryChanges = connection.subscribe(directoryChangesSubject(config.namespace), {
      callback: (error, message) => {
        if (error !== null) return;
        const decoded = decodeMessage(directoryChange, message.data);
        if (decoded.ok && decoded.value.entry.kind === "user") homeCells.learn(decoded.value.entry.id, decoded.value.entry);
      },
    });
    undo.push(async () => directoryChanges.unsubscribe());
    // The worker's clock and randomness drive the appender's waits for a moving mailbox, as they drive the rest.
    const appender = new MailboxAppender(directory, router, homeCells, {
      options: homeRouterDefaults,
      dependencies: { monotonicNowMs: () => clock.monotonicNowMs(), random: dependencies.random, sleep: dependencies.sleep },
    });
    const relay = new OutboxRelay({
      store,
      append: (entry) => appender.append(entry),
      // Strictly the owner: with an empty ring (own lease not seen yet) the sweeper waits.
      ownsConversation: (conversationId) => leaseHeld() && watcher.snapshot.ring.ownerOf(conversationId) === config.workerId,
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
    });
    undo.push(async () => void (await relay.stop(0)));
    // Keys that move away and back may have been written by another worker meanwhile.
    watcher.onChange(() => relay.forgetCleanConversations());

    // Migration has its own directory client and router: a page of up to 512 KiB, or a flip, may take
    // longer than the relay's short per-attempt timeout allows.
    const migrationRequestTimeoutMs = config.migrationRequestTimeoutMs ?? migrationRequestTimeoutMsDefault;
    const migrationDirectory = new DirectoryClient(connection, config.namespace, migrationRequestTimeoutMs);
    const migrationRouter = cellRouter({
      requestTimeoutMs: migrationRequestTimeoutMs,
      deadlineMs: migrationRequestTimeoutMs,
      attemptsMax: migrationImportAttemptsMax,
    });

    const queue = new KeyedSerialQueue({ pendingPerKeyMax: config.pendingPerConversationMax, pendingTotalMax: config.pendingTotalMax });
    const deliveries = deliveriesSubject(config.namespace);
    const publisher = new MessagePublisher({
      members: (conversationId) => store.members(conversationId),
      publish: (payload) => connection.publish(deliveries, payload),
      logger,
      conversationsMax: config.memberCacheConversationsMax ?? memberCacheConversationsMaxDefault,
    });
    const sends = new SendCommitter({
      workerId: config.workerId,
      store,
      ownership: { snapshot: () => watcher.snapshot, leaseHeld },
      publish: (messages) => publisher.publish(messages),
      monotonicNowMs: () => clock.monotonicNowMs(),
      logger,
      limits: {
        batchSendsMax: config.sendBatchMax ?? sendBatchMaxDefault,
        pendingSendsMax: config.sendsPendingMax ?? sendsPendingMaxDefault,
        queueWaitMsMax: config.sendQueueWaitMsMax ?? sendQueueWaitMsMaxDefault,
      },
      linger: {
        lingerMs: config.sendLingerMs ?? sendLingerMsDefault,
        busyWindowMs: config.sendBusyWindowMs ?? sendBusyWindowMsDefault,
        setTimer: (ms, callback) => {
          const timer = setTimeout(callback, ms);
          return () => clearTimeout(timer);
        },
      },
      retry: { windowMs: config.sendRetryWindowMs ?? sendRetryWindowMsDefault, random: dependencies.random, sleep: dependencies.sleep },
    });
    const handler = new CellRequestHandler({
      workerId: config.workerId,
      cellId: config.cellId,
      migration: {
        directory: migrationDirectory,
        router: migrationRouter,
        clock,
        limits: {
          migrationsInFlightMax: config.migrationsInFlightMax ?? migrationsInFlightMaxDefault,
          flipAttemptsMax: migrationFlipAttemptsMax,
          precopyPagesMax: migrationPrecopyPagesMax,
        },
      },
      store,
      ownership: {
        // The ring and its epoch are read afresh at each check: a write carries the epoch of the ring on
        // which this worker owns the key at the moment the write runs.
        snapshot: () => watcher.snapshot,
        leaseHeld,
      },
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

    // Resumes moves whose mover died, so a key frozen by a killed worker does not wait for a new cell.migrate.
    const frozenKeySweeper = new FrozenKeySweeper({
      store,
      owns: (ringKey) => leaseHeld() && watcher.snapshot.ring.ownerOf(ringKey) === config.workerId,
      migrating: (ringKey) => handler.isMigrating(ringKey),
      migrate: (request) => handler.resumeMigration(request),
      clock,
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
    undo.push(() => frozenKeySweeper.stop());

    const subject = workerSubject(config.namespace, config.cellId, config.workerId);
    const requestSubjects = workerRequestSubjects(subject);
    const textDecoder = new TextDecoder();
    // One subscription per channel (docs/decisions/0015), each callback bound to its channel: the NATS
    // permissions decide who may publish on it, and a kind that belongs to another channel is refused.
    // The callback runs synchronously per message, in arrival order, which is what handle() requires.
    // The payload is parsed once: a batch of sends goes to the committer, anything else to handle().
    const serve = (channel: WorkerChannel): ReturnType<typeof connection.subscribe> => {
      const channelSubject = requestSubjects[channel];
      return connection.subscribe(channelSubject, {
        callback: (error, message) => {
          if (error !== null) {
            logger.warn(`subscription ${channelSubject} failed: ${error.message}`);
            return;
          }
          const respond = (reply: unknown): void => {
            if (!message.respond(encodeJson(reply))) logger.warn(`a request on ${channelSubject} had no reply subject`);
          };
          const parsed = parseJson(textDecoder.decode(message.data));
          if (!parsed.ok) {
            respond(cellErrorReply({ kind: "bad_payload", reason: "$ is not valid JSON" }));
            return;
          }
          const type = isRecord(parsed.value) ? parsed.value["type"] : undefined;
          const refusal = offChannelRefusal(type, channel);
          if (refusal !== undefined) {
            logger.warn(`worker ${config.workerId} refused ${String(type).slice(0, 40)} on ${channelSubject}`);
            respond(refusal);
            return;
          }
          if (type === "cell.sendBatch") {
            const batch = decode(cellSendBatch, parsed.value);
            if (batch.ok) handler.handleSendBatch(batch.value, respond);
            else respond(cellErrorReply({ kind: "bad_payload", reason: `${batch.failure.path} ${batch.failure.reason}` }));
            return;
          }
          void handler.handleParsed(parsed.value, respond);
        },
      });
    };
    // A directory that lost its store rebuilds from what the cells hold (docs/decisions/0023).
    const inventory = serveInventory(
      connection,
      config.namespace,
      { cellId: config.cellId, weight: config.cellWeight },
      store,
      inventoryPagesInFlightMax,
      logger,
    );
    const subscriptions = [...workerChannels.map(serve), inventory];
    undo.push(async () => {
      for (const subscription of subscriptions) subscription.unsubscribe();
    });

    const lease: WorkerLease = {
      workerId: config.workerId,
      cellId: config.cellId,
      subject,
      startedAtMs: clock.wallNowMs(),
      leaseMs: config.leaseMs,
    };
    const holder = new LeaseHolder(bucket, lease, config.heartbeatIntervalMs, clock, logger);
    await holder.start();
    leaseHolder = holder;
    // After a NATS outage the lease has most likely lapsed: renewed at once, the worker serves again as
    // soon as NATS does (docs/decisions/0025). The loop ends when the connection closes.
    void (async () => {
      for await (const status of connection.status()) if (status.type === "reconnect") holder.connectionRestored();
    })();
    const databaseWatchdog = new DatabaseWatchdog({
      probe: async () => void (await probePool.query("select 1")),
      giveUpLease: () => holder.stop(),
      rejoin: () => holder.start(),
      monotonicNowMs: () => clock.monotonicNowMs(),
      setInterval: (ms, callback) => {
        const timer = setInterval(callback, ms);
        return () => clearInterval(timer);
      },
      logger,
      limits: { unreachableMs, probeIntervalMs: config.postgresProbeIntervalMs ?? postgresProbeIntervalMsDefault },
    });
    watchdog = databaseWatchdog;
    databaseWatchdog.start();
    undo.push(() => databaseWatchdog.stop());
    relay.start();
    frozenKeySweeper.start();
    logger.info(`worker ${config.workerId} of cell ${config.cellId} serves ${subject}.{edge,peer,admin}`);

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        // From here the lease only goes: a probe answering now must not put it back.
        await databaseWatchdog.stop();
        // No new move begins; one the sweeper resumed finishes (whenMigrationsIdle below waits for it too).
        await frozenKeySweeper.stop();
        // Relays in flight finish while this worker still serves (some target its own mailboxes); rows
        // not relayed by then stay in the outbox for the next owner's sweeper.
        if (!(await relay.stop(config.relayStopWaitMs))) {
          logger.warn(`relays still running after WORKER_RELAY_STOP_WAIT_MS=${config.relayStopWaitMs} ms are left to the next owner`);
        }
        // New requests now find no responder (edges retry on the next owner); queued ones finish first.
        await Promise.all(
          subscriptions.map((subscription) =>
            subscription.drain().catch((error: unknown) => logger.warn(`draining ${subject}: ${describeError(error)}`)),
          ),
        );
        // A move cut short by a closed pool would leave its key frozen until asked again: moves finish first.
        await handler.whenMigrationsIdle();
        await queue.whenIdle();
        await sends.whenIdle();
        directoryChanges.unsubscribe();
        await holder.stop();
        watcher.stop();
        router.stop();
        migrationRouter.stop();
        // Drain flushes the replies and deliveries still buffered before closing.
        await connection.drain().catch(() => connection.close());
        await pool.end();
        await sendPool.end();
        await probePool.end();
        logger.info(`worker ${config.workerId} stopped`);
      })();
      return stopping;
    };
    return { workerId: config.workerId, stop };
  } catch (error) {
    for (const step of undo.reverse()) await step().catch(() => undefined);
    throw error;
  }
}

/**
 * Registers the cell with the directory, retrying while it is unavailable (it may start after the
 * workers) until config.directoryWaitMs has passed.
 */
async function registerCell(
  directory: DirectoryClient,
  config: WorkerConfig,
  logger: ServiceLogger,
  dependencies: Dependencies,
): Promise<void> {
  const { clock, random, sleep } = dependencies;
  const deadlineMs = clock.monotonicNowMs() + config.directoryWaitMs;
  for (let attempt = 0; ; attempt++) {
    try {
      const cells = await directory.registerCell(config.cellId, config.cellWeight);
      logger.info(`cell ${config.cellId} registered with the directory (${cells.length} cells)`);
      return;
    } catch (error) {
      if (!(error instanceof UnavailableError)) throw error;
      const remainingMs = deadlineMs - clock.monotonicNowMs();
      if (remainingMs <= 0) {
        throw new UnavailableError(
          "directory_unavailable",
          `the directory did not register cell ${config.cellId} within WORKER_DIRECTORY_WAIT_MS=${config.directoryWaitMs} ms; is it running? (${error.message})`,
          { cause: error },
        );
      }
      if (attempt === 0) logger.info("waiting for the directory");
      await sleep(Math.min(remainingMs, Math.max(directoryRetryDelayMinMs, backoffDelayMs(directoryRetryBackoff, attempt, random))));
    }
  }
}
