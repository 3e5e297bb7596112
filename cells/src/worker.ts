// A cell worker process, in-process startable: it prepares the cell's database, registers the cell with
// the directory, joins the cell's ring with a lease, serves requests for the keys it owns (conversations
// and users' mailboxes), and relays its conversations' outbox rows to the recipients' mailbox owners.
// startWorker is the composition root: each part is built by a named function of worker-parts.ts, in order.
import {
  DirectoryClient,
  MembershipWatcher,
  type LeaseHolder,
  UnavailableError,
  backoffDelayMs,
  anonymousNatsAccess,
  connectNats,
  createServiceMetrics,
  leaseExpiryCheckIntervalMs,
  startAdminListener,
  watchNatsConnected,
  watchersFollowConnection,
  type AdminListener,
  type ServiceMetrics,
  openMembershipBucket,
  sleep,
  systemClock,
  type BackoffPolicy,
  type ServiceLogger,
} from "@cellwire/cluster";
import type pg from "pg";
import type { Subscription } from "@nats-io/transport-node";
import { workerSubject } from "@cellwire/protocol";
import { adminHostDefault, adminPortDefault, postgresProbeIntervalMsDefault, type WorkerConfig } from "./config.ts";
import type { DatabaseWatchdog } from "./database-watchdog.ts";
import type { FrozenKeySweeper } from "./frozen-key-sweeper.ts";
import { ensureCellDatabase } from "./store/database.ts";
import { describeError } from "./store/errors.ts";
import { PostgresConversationStore } from "./store/postgres-store.ts";
import { WorkerOwnership } from "./worker-ownership.ts";
import { timeStatements } from "./timed-statements.ts";
import {
  createWorkerCounters,
  directoryRequestTiming,
  outboxQueryTimeoutMs,
  outboxSampleFromRow,
  outboxSampleSql,
  registerWorkerGauges,
  type WorkerCounters,
} from "./worker-metrics.ts";
import { databaseAnswerAgeMsMax, workerReadinessChecks } from "./worker-readiness.ts";
import {
  buildFrozenKeySweeper,
  buildRelayPath,
  buildRequestPath,
  openCellPools,
  serveRequests,
  type CellPools,
  type RelayPath,
  type RequestPath,
  type Undo,
  type WorkerContext,
  type WorkerDependencies,
} from "./worker-parts.ts";
import { startDatabaseWatchdog, takeLease } from "./worker-lease.ts";

export type RunningWorker = {
  readonly workerId: string;
  /** The port of the worker's admin listener (/metrics, /livez, /readyz) on config.adminHost. */
  readonly adminPort: number;
  /** Stops taking requests, finishes those in flight, gives up the lease and closes connections. Idempotent. */
  readonly stop: () => Promise<void>;
};

/** One registration attempt waits this long for the directory before the next. */
const directoryRequestTimeoutMs = 2000;
const directoryRetryBackoff: BackoffPolicy = { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 };
/** Full jitter can draw ~0 ms; a floor keeps a silent directory from being asked in a tight loop. */
const directoryRetryDelayMinMs = 25;

const defaultDependencies: WorkerDependencies = { clock: systemClock, random: Math.random, sleep };

export async function startWorker(
  config: WorkerConfig,
  logger: ServiceLogger,
  dependencies: WorkerDependencies = defaultDependencies,
): Promise<RunningWorker> {
  // Undone in reverse order when the start fails part-way.
  const undo: Undo = [];
  const serviceMetrics = createServiceMetrics("worker", `cellwire-worker-${config.workerId}`);
  const metrics = createWorkerCounters(serviceMetrics.registry);
  try {
    const databaseUrl = await ensureCellDatabase(config.postgresAdminUrl, config.namespace, config.cellId);
    const pools = openCellPools(databaseUrl, config, logger, undo);
    const connection = await connectNats(
      [...config.natsServers],
      `cellwire-worker-${config.workerId}`,
      logger,
      config.natsAccess ?? anonymousNatsAccess("worker"),
      serviceMetrics,
    );
    undo.push(() => connection.close());
    const nats = watchNatsConnected(connection);

    const timing = directoryRequestTiming(metrics, dependencies.clock);
    const directory = new DirectoryClient(connection, config.namespace, directoryRequestTimeoutMs, timing);
    await registerCell(directory, config, logger, dependencies);

    const bucket = await openMembershipBucket(
      connection,
      config.namespace,
      config.cellId,
      config.leaseMs,
      config.membershipBucketReplicas ?? 1,
    );
    const watcher = new MembershipWatcher(bucket, config.cellId, leaseExpiryCheckIntervalMs(config.leaseMs), dependencies.clock, logger);
    watcher.onChange(() => metrics.ringChanged());
    watcher.onLeaseExpired(() => metrics.leaseExpired());
    await watcher.start();
    undo.push(async () => watcher.stop());
    watchersFollowConnection(connection, () => [watcher]); // leases count from NATS's return (0041)
    await watcher.ready;

    const store = timeStatements(new PostgresConversationStore(pools.pool, {}, pools.sendPool), metrics.statementSeconds);
    const ownership = new WorkerOwnership(config.workerId, watcher);
    const context: WorkerContext = { config, logger, dependencies, connection, store, ownership, watcher, metrics, undo };
    const relayPath = buildRelayPath(context, directory);
    const requestPath = buildRequestPath(context, relayPath.relay);
    const frozenKeySweeper = buildFrozenKeySweeper(context, requestPath.handler);
    const subject = workerSubject(config.namespace, config.cellId, config.workerId);
    const subscriptions = serveRequests(context, subject, requestPath.handler);
    const holder = await takeLease(context, bucket, subject);
    const databaseWatchdog = startDatabaseWatchdog(context, pools, holder);
    relayPath.relay.start();
    frozenKeySweeper.start();
    const admin = await startWorkerAdmin(context, serviceMetrics, { pools, watcher, databaseWatchdog, nats });
    logger.info(
      `worker ${config.workerId} of cell ${config.cellId} serves ${subject}.{edge,peer,admin}; admin listener on ${config.adminHost ?? adminHostDefault}:${admin.port}`,
      { adminPort: admin.port },
    );

    let stopping: Promise<void> | undefined;
    const parts: StartedWorker = {
      context,
      pools,
      watcher,
      relayPath,
      requestPath,
      frozenKeySweeper,
      subject,
      subscriptions,
      holder,
      databaseWatchdog,
      admin,
    };
    const stop = (): Promise<void> => (stopping ??= stopWorker(parts));
    return { workerId: config.workerId, adminPort: admin.port, stop };
  } catch (error) {
    for (const step of undo.reverse()) await step().catch(() => undefined);
    throw error;
  }
}

type StartedWorker = {
  readonly context: WorkerContext;
  readonly pools: CellPools;
  readonly watcher: MembershipWatcher;
  readonly relayPath: RelayPath;
  readonly requestPath: RequestPath;
  readonly frozenKeySweeper: FrozenKeySweeper;
  readonly subject: string;
  readonly subscriptions: readonly Subscription[];
  readonly holder: LeaseHolder;
  readonly databaseWatchdog: DatabaseWatchdog;
  readonly admin: AdminListener;
};

/**
 * The worker's gauges (read at scrape time from its ring, lease, pools, NATS connection and outbox) and its
 * admin listener, whose /readyz asks the lease, the database's last probe and NATS.
 */
async function startWorkerAdmin(
  context: WorkerContext,
  serviceMetrics: ServiceMetrics,
  parts: {
    readonly pools: CellPools;
    readonly watcher: MembershipWatcher;
    readonly databaseWatchdog: DatabaseWatchdog;
    readonly nats: { readonly connected: () => boolean };
  },
): Promise<AdminListener> {
  const { config, ownership, undo } = context;
  const { pools, watcher, databaseWatchdog, nats } = parts;
  const allPools = [pools.pool, pools.sendPool, pools.probePool];
  registerWorkerGauges(serviceMetrics.registry, {
    ringEpoch: () => watcher.snapshot.ringEpoch,
    ringMembers: () => watcher.snapshot.subjects.size,
    ownsLease: ownership.leaseHeld,
    natsConnected: nats.connected,
    poolConnections: () => ({
      total: allPools.reduce((sum, pool) => sum + pool.totalCount, 0),
      idle: allPools.reduce((sum, pool) => sum + pool.idleCount, 0),
      waiting: allPools.reduce((sum, pool) => sum + pool.waitingCount, 0),
    }),
    // On the requests' pool, bounded by a client-side timeout so a scrape never waits on a silent database
    // (node-postgres honours query_timeout per query; its types name it only for the client's config).
    outbox: async () => {
      const query = { text: outboxSampleSql, query_timeout: outboxQueryTimeoutMs } as pg.QueryConfig;
      return outboxSampleFromRow((await pools.pool.query(query)).rows[0]);
    },
  });
  const admin = await startAdminListener({
    host: config.adminHost ?? adminHostDefault,
    port: config.adminPort ?? adminPortDefault,
    metrics: serviceMetrics,
    readiness: workerReadinessChecks({
      leaseHeld: ownership.leaseHeld,
      databaseAnsweredAgoMs: () => databaseWatchdog.answeredAgoMs(),
      databaseAnswerAgeMsMax: databaseAnswerAgeMsMax(config.postgresProbeIntervalMs ?? postgresProbeIntervalMsDefault),
      natsConnected: nats.connected,
    }),
  });
  undo.push(() => admin.stop());
  return admin;
}

export type { WorkerCounters };

/** A worker's stop, in the order that lets work in flight finish before what it needs closes. */
async function stopWorker(parts: StartedWorker): Promise<void> {
  const { context, pools, relayPath, requestPath, subscriptions } = parts;
  const { config, logger, connection } = context;
  // From here the lease only goes: a probe answering now must not put it back.
  await parts.databaseWatchdog.stop();
  // No new move begins; one the sweeper resumed finishes (whenMigrationsIdle below waits for it too).
  await parts.frozenKeySweeper.stop();
  // Relays in flight finish while this worker still serves (some target its own mailboxes); rows
  // not relayed by then stay in the outbox for the next owner's sweeper.
  if (!(await relayPath.relay.stop(config.relayStopWaitMs))) {
    logger.warn(`relays still running after WORKER_RELAY_STOP_WAIT_MS=${config.relayStopWaitMs} ms are left to the next owner`);
  }
  // New requests now find no responder (edges retry on the next owner); queued ones finish first.
  await Promise.all(
    subscriptions.map((subscription) =>
      subscription.drain().catch((error: unknown) => logger.warn(`draining ${parts.subject}: ${describeError(error)}`)),
    ),
  );
  // A move cut short by a closed pool would leave its key frozen until asked again: moves finish first.
  await requestPath.handler.whenMigrationsIdle();
  await requestPath.queue.whenIdle();
  await requestPath.sends.whenIdle();
  relayPath.directoryChanges.unsubscribe();
  await parts.holder.stop();
  parts.watcher.stop();
  relayPath.router.stop();
  requestPath.migrationRouter.stop();
  // Drain flushes the replies and deliveries still buffered before closing.
  await connection.drain().catch(() => connection.close());
  await pools.pool.end();
  await pools.sendPool.end();
  await pools.probePool.end();
  // Last: a scraper sees the worker until it is gone.
  await parts.admin.stop();
  logger.info(`worker ${config.workerId} stopped`);
}

/**
 * Registers the cell with the directory, retrying while it is unavailable (it may start after the
 * workers) until config.directoryWaitMs has passed.
 */
async function registerCell(
  directory: DirectoryClient,
  config: WorkerConfig,
  logger: ServiceLogger,
  dependencies: WorkerDependencies,
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
