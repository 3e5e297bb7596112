// A cell worker process, in-process startable: it prepares the cell's database, registers the cell with
// the directory, joins the cell's ring with a lease, and serves requests for the keys it owns.
import pg from "pg";
import {
  DirectoryClient,
  LeaseHolder,
  MembershipWatcher,
  UnavailableError,
  backoffDelayMs,
  connectNats,
  encodeJson,
  openMembershipBucket,
  systemClock,
  type BackoffPolicy,
  type Clock,
  type ServiceLogger,
} from "@cellwire/cluster";
import { deliverySubject, workerSubject, type WorkerLease } from "@cellwire/protocol";
import type { WorkerConfig } from "./config.ts";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { MemberCache } from "./member-cache.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { ensureCellDatabase } from "./store/database.ts";
import { describeError } from "./store/errors.ts";
import { PostgresConversationStore } from "./store/postgres-store.ts";

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
/** A request waits at most this long for a pooled Postgres connection, then fails as cell_unavailable. */
const postgresConnectTimeoutMs = 5000;
/** A statement running longer is cancelled by Postgres, so a stuck query cannot hold a conversation's turn. */
const postgresStatementTimeoutMs = 10_000;

type Dependencies = { readonly clock: Clock; readonly random: () => number; readonly sleep: (ms: number) => Promise<void> };
const defaultDependencies: Dependencies = {
  clock: systemClock,
  random: Math.random,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export async function startWorker(config: WorkerConfig, logger: ServiceLogger, dependencies: Dependencies = defaultDependencies): Promise<RunningWorker> {
  const { clock } = dependencies;
  // Undone in reverse order when the start fails part-way.
  const undo: (() => Promise<void>)[] = [];
  try {
    const databaseUrl = await ensureCellDatabase(config.postgresAdminUrl, config.namespace, config.cellId);
    const pool = new pg.Pool({
      connectionString: databaseUrl,
      max: config.poolSize,
      connectionTimeoutMillis: postgresConnectTimeoutMs,
      statement_timeout: postgresStatementTimeoutMs,
    });
    // An idle pooled client whose server restarts emits 'error'; unhandled, it would end the process.
    pool.on("error", (error) => logger.warn(`idle Postgres connection failed: ${describeError(error)}`));
    undo.push(() => pool.end());

    const connection = await connectNats([...config.natsServers], `cellwire-worker-${config.workerId}`, logger);
    undo.push(() => connection.close());

    await registerCell(new DirectoryClient(connection, config.namespace, directoryRequestTimeoutMs), config, logger, dependencies);

    const bucket = await openMembershipBucket(connection, config.namespace, config.cellId, config.leaseMs);
    const watcher = new MembershipWatcher(bucket, config.cellId, Math.max(50, Math.floor(config.leaseMs / 4)), clock, logger);
    await watcher.start();
    undo.push(async () => watcher.stop());
    await watcher.ready;

    const memberCache = new MemberCache(config.memberCacheConversationsMax);
    // Keys that move away and back may have changed members on another worker meanwhile.
    watcher.onChange(() => memberCache.clear());
    const queue = new KeyedSerialQueue({ pendingPerKeyMax: config.pendingPerConversationMax, pendingTotalMax: config.pendingTotalMax });
    let leaseHolder: LeaseHolder | undefined;
    const handler = new CellRequestHandler({
      workerId: config.workerId,
      store: new PostgresConversationStore(pool),
      ownership: {
        ownerOf: (key) => watcher.snapshot.ring.ownerOf(key),
        // Before the lease is first written the worker serves what its ring gives it (see ownerOf).
        leaseHeld: () => leaseHolder === undefined || leaseHolder.holds(),
      },
      queue,
      memberCache,
      publishDelivery: (delivery) =>
        connection.publish(deliverySubject(config.namespace, delivery.recipientUserId), encodeJson(delivery)),
      logger,
    });

    const subject = workerSubject(config.namespace, config.cellId, config.workerId);
    const textDecoder = new TextDecoder();
    // The callback runs synchronously per message, in arrival order, which is what handle() requires.
    const subscription = connection.subscribe(subject, {
      callback: (error, message) => {
        if (error !== null) {
          logger.warn(`subscription ${subject} failed: ${error.message}`);
          return;
        }
        void handler.handle(textDecoder.decode(message.data), (reply) => {
          if (!message.respond(encodeJson(reply))) logger.warn(`a request on ${subject} had no reply subject`);
        });
      },
    });
    undo.push(async () => subscription.unsubscribe());

    const lease: WorkerLease = { workerId: config.workerId, cellId: config.cellId, subject, startedAtMs: clock.wallNowMs(), leaseMs: config.leaseMs };
    const holder = new LeaseHolder(bucket, lease, config.heartbeatIntervalMs, clock, logger);
    await holder.start();
    leaseHolder = holder;
    logger.info(`worker ${config.workerId} of cell ${config.cellId} serves ${subject}`);

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        // New requests now find no responder (edges retry on the next owner); queued ones finish first.
        await subscription.drain().catch((error: unknown) => logger.warn(`draining ${subject}: ${describeError(error)}`));
        await queue.whenIdle();
        await holder.stop();
        watcher.stop();
        // Drain flushes the replies and deliveries still buffered before closing.
        await connection.drain().catch(() => connection.close());
        await pool.end();
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
async function registerCell(directory: DirectoryClient, config: WorkerConfig, logger: ServiceLogger, dependencies: Dependencies): Promise<void> {
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
