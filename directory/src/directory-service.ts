// The Discovery Service process: answers DirectoryRequests on the directory subject (queue group
// "directory", so several instances share the load) from the data in Redis. It is the only Cellwire
// process that talks to Redis.
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import tls from "node:tls";
import { Redis } from "ioredis";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  cellInventoryAnswer,
  cellInventorySubject,
  directoryChangesSubject,
  directoryRequest,
  directorySubject,
  type CellInventoryAnswer,
  type DirectoryChange,
  type DirectoryEntryKind,
  type DirectoryEntry,
  type DirectoryReply,
  type DirectoryRequest,
} from "@cellwire/protocol";
import {
  activeTracing,
  anonymousNatsAccess,
  connectNats,
  decodeMessage,
  encodeJson,
  listCellIds,
  createServiceMetrics,
  startAdminListener,
  watchNatsConnected,
  type AdminListener,
  type NatsConnectedState,
  type ServiceLogger,
  type ServiceMetrics,
} from "@cellwire/cluster";
import { createDirectoryMetrics, noDirectoryServiceMetrics, type DirectoryServiceMetrics } from "./directory-metrics.ts";
import { DirectoryRebuilder, rebuildLimitsDefault } from "./directory-rebuild.ts";
import { directoryConfigDefaults, redactRedisUrl, type DirectoryConfig } from "./config.ts";
import { RedisUnavailableError } from "./errors.ts";
import { cellsMax, RedisDirectory } from "./redis-directory.ts";
import { answerDirectoryRequest, errorReply } from "./directory-answers.ts";

export const directoryQueueGroup = "directory";
export const directoryProcessName = "cellwire-directory";

/** Reconnection to Redis never stops; the wait between attempts grows to this. */
const redisReconnectDelayMsMax = 1_000;
const redisReconnectDelayStepMs = 50;
const redisConnectTimeoutMs = 2_000;
/** While Redis stays down (or requests keep failing), one warning per interval, not one per attempt. */
const warningIntervalMs = 10_000;
/** One cell.inventory page may take this long (a page of 1,000 rows is one indexed read). */
const inventoryRequestTimeoutMs = 5_000;
/** How long the start waits for a first rebuild (a fresh deployment's is immediate) before serving anyway. */
const firstRebuildWaitMs = 2_000;
const localRedisCommand = `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`;

export type RunningDirectory = {
  /** The port of the admin listener (/metrics, /livez, /readyz) on config.adminHost. */
  readonly adminPort: number;
  readonly stop: () => Promise<void>;
};

/** Logs a warning at most once per interval and says how many it held back meanwhile. */
function throttledWarning(logger: ServiceLogger, intervalMs: number): (message: string) => void {
  let lastAtMs = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return (message) => {
    const nowMs = performance.now();
    if (nowMs - lastAtMs < intervalMs) {
      suppressed++;
      return;
    }
    logger.warn(suppressed > 0 ? `${message} (and ${suppressed} more since the last warning)` : message);
    lastAtMs = nowMs;
    suppressed = 0;
  };
}

/**
 * Serves directory requests from one subscription. Requests run concurrently, at most
 * requestsInFlightMax at once; past it a request is answered directory_unavailable at once, so a slow
 * Redis turns into fast, retryable errors rather than a growing queue.
 */
export class DirectoryService {
  private subscription: Subscription | undefined;
  private inFlight = 0;
  private idle: (() => void) | undefined;
  private readonly warnFailure: (message: string) => void;

  constructor(
    private readonly connection: NatsConnection,
    private readonly directory: RedisDirectory,
    private readonly namespace: string,
    private readonly requestsInFlightMax: number,
    private readonly logger: ServiceLogger,
    private readonly random: () => number = Math.random,
    private readonly metrics: DirectoryServiceMetrics = noDirectoryServiceMetrics,
  ) {
    this.warnFailure = throttledWarning(logger, warningIntervalMs);
  }

  start(): void {
    if (this.subscription !== undefined) throw new Error("the directory service is already started");
    this.subscription = this.connection.subscribe(directorySubject(this.namespace), {
      queue: directoryQueueGroup,
      callback: (error, message) => {
        if (error !== null) {
          this.warnFailure(`directory subscription: ${error.message}`);
          return;
        }
        this.receive(message);
      },
    });
  }

  /** Stops taking requests, then waits for those in flight to be answered. */
  async stop(): Promise<void> {
    const subscription = this.subscription;
    if (subscription === undefined) return;
    if (!subscription.isClosed()) await subscription.drain();
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }

  private receive(message: Msg): void {
    // A request published without a reply subject cannot be answered: it is a sender's bug, not ours.
    if (message.reply === undefined || message.reply === "") {
      this.warnFailure("directory request without a reply subject ignored");
      return;
    }
    const receivedAtMs = performance.now();
    const decoded = decodeMessage(directoryRequest, message.data);
    if (!decoded.ok) {
      this.respond(message, receivedAtMs, undefined, {
        type: "directory.error",
        code: "internal",
        message: `malformed directory request: ${decoded.reason}`.slice(0, 2000),
      });
      return;
    }
    if (this.inFlight >= this.requestsInFlightMax) {
      this.respond(message, receivedAtMs, decoded.value.type, {
        type: "directory.error",
        code: "directory_unavailable",
        message: `the directory has ${this.requestsInFlightMax} requests in flight, its limit`,
      });
      return;
    }
    this.inFlight++;
    // With tracing on, the request is a span in the trace its headers carry (an edge's frame, a worker's request).
    const tracing = activeTracing();
    const answered =
      tracing === undefined
        ? this.answer(message, decoded.value, receivedAtMs)
        : tracing.inSpanOf("directory.request", { "cellwire.request.type": decoded.value.type }, tracing.extract(message.headers), () =>
            this.answer(message, decoded.value, receivedAtMs),
          );
    void answered.finally(() => {
      this.inFlight--;
      if (this.inFlight === 0 && this.idle !== undefined) this.idle();
    });
  }

  private async answer(message: Msg, request: DirectoryRequest, receivedAtMs: number): Promise<void> {
    let reply: DirectoryReply;
    try {
      reply = await answerDirectoryRequest(this.directory, request, this.random, (entry) => this.publishChange(entry));
    } catch (error) {
      reply = errorReply(error);
      this.reportFailure(request.type, error);
    }
    this.respond(message, receivedAtMs, request.type, reply);
  }

  /** An internal error is logged with its stack; an expected one (Redis away) as a throttled warning. */
  private reportFailure(requestType: DirectoryRequest["type"], error: unknown): void {
    const reply = errorReply(error);
    if (reply.code === "internal") {
      this.logger.error(`${requestType} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    } else {
      this.warnFailure(`${requestType} failed: ${reply.message}`);
    }
  }

  /**
   * Announces a moved entry on directory.changed. The repeat of a move is announced again: the first
   * announcement may be the one a crashed attempt never made. A failed publish is logged, not answered as
   * a failure: the entry has moved, and a cache that missed the change learns it from `cell.moved`.
   */
  private publishChange(entry: DirectoryEntry): void {
    const change: DirectoryChange = { type: "directory.changed", entry };
    try {
      this.connection.publish(directoryChangesSubject(this.namespace), encodeJson(change));
    } catch (error) {
      this.warnFailure(`could not publish directory.changed for ${entry.kind} ${entry.id}: ${String(error)}`);
    }
  }

  private respond(message: Msg, receivedAtMs: number, operation: DirectoryRequest["type"] | undefined, reply: DirectoryReply): void {
    this.metrics.answered(operation, reply, receivedAtMs);
    try {
      message.respond(encodeJson(reply));
    } catch (error) {
      // The connection is closing or closed: the requester times out and retries, nothing else to do.
      this.warnFailure(`could not reply to a directory request: ${String(error)}`);
    }
  }
}

/**
 * A Redis client that fails fast instead of queueing: with no offline queue a command sent while
 * disconnected fails at once, a command in flight fails after redisCommandTimeoutMs, and the client keeps
 * reconnecting (with a bounded delay) for as long as the process lives.
 */
/** `redisTlsCa`: the PEM text of config.redisTlsCaFile, read by the caller. */
export function createRedisClient(config: DirectoryConfig, logger: ServiceLogger, redisTlsCa?: string): Redis {
  const redis = new Redis(config.redisUrl, {
    // A rediss:// URL turns TLS on in ioredis; a private CA is added to the system's.
    ...(redisTlsCa === undefined ? {} : { tls: { ca: [...tls.rootCertificates, redisTlsCa] } }),
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: config.redisCommandTimeoutMs,
    connectTimeout: redisConnectTimeoutMs,
    retryStrategy: (attempts) => Math.min(attempts * redisReconnectDelayStepMs, redisReconnectDelayMsMax),
    connectionName: directoryProcessName,
    // The commands of one turn go out in one write: the requests of one NATS read (the hellos of one turn
    // of an edge, edge-server.ts) cost one syscall here and one read in Redis, not one each.
    enableAutoPipelining: true,
  });
  const url = redactRedisUrl(config.redisUrl);
  const warnDown = throttledWarning(logger, warningIntervalMs);
  let reachable = false;
  redis.on("error", (error: Error) => warnDown(`redis at ${url}: ${error.message}`));
  // "reconnecting" rather than "close": a deliberate QUIT closes too, but does not reconnect.
  redis.on("reconnecting", () => {
    if (reachable) logger.warn(`redis at ${url}: connection lost; reconnecting`);
    reachable = false;
  });
  redis.on("ready", () => {
    logger.info(`redis at ${url}: ready`);
    reachable = true;
  });
  return redis;
}

/** Connects and PINGs once; a Redis that does not answer fails the start with how to run one locally. */
export async function connectRedis(redis: Redis, redisUrl: string): Promise<void> {
  let lastError: Error | undefined;
  const remember = (error: Error): void => {
    lastError = error;
  };
  redis.on("error", remember);
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    redis.disconnect();
    const reason = lastError?.message ?? (error instanceof Error ? error.message : String(error));
    throw new RedisUnavailableError(
      `Redis is unreachable at ${redactRedisUrl(redisUrl)} (${reason}). The directory keeps its data in Redis; ` +
        `set DIRECTORY_REDIS_URL, or start one locally with: ${localRedisCommand}`,
      { cause: error },
    );
  } finally {
    redis.off("error", remember);
  }
}

async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    // QUIT cannot be sent while disconnected (no offline queue): drop the connection instead.
    redis.disconnect();
  }
}

const textDecoder = new TextDecoder();

/** One cell.inventory page from any worker of `cellId`, for a rebuild; throws when none answers or the page does not decode. */
async function requestInventoryPage(
  connection: NatsConnection,
  namespace: string,
  cellId: string,
  kind: DirectoryEntryKind,
  afterId: string,
  limit: number,
): Promise<CellInventoryAnswer> {
  const reply = await connection.request(
    cellInventorySubject(namespace, cellId),
    encodeJson({ type: "cell.inventory", kind, afterId, limit }),
    {
      timeout: inventoryRequestTimeoutMs,
    },
  );
  const decoded = decodeMessage(cellInventoryAnswer, reply.data);
  if (!decoded.ok)
    throw new Error(
      `cell ${cellId} answered an undecodable inventory page: ${decoded.reason} (${textDecoder.decode(reply.data).slice(0, 80)})`,
    );
  return decoded.value;
}

/**
 * The directory's admin listener. Ready while both of its dependencies are: a directory without Redis
 * answers every request with directory_unavailable, one without NATS hears none.
 */
function startDirectoryAdmin(
  config: DirectoryConfig,
  serviceMetrics: ServiceMetrics,
  redis: Redis,
  nats: NatsConnectedState,
): Promise<AdminListener> {
  return startAdminListener({
    host: config.adminHost ?? directoryConfigDefaults.adminHost,
    port: config.adminPort ?? directoryConfigDefaults.adminPort,
    metrics: serviceMetrics,
    readiness: [
      { name: "redis", check: () => (redis.status === "ready" ? { ok: true } : { ok: false, detail: `redis is ${redis.status}` }) },
      { name: "nats", check: () => (nats.connected() ? { ok: true } : { ok: false, detail: "the NATS connection is down; reconnecting" }) },
    ],
  });
}

/** Starts the directory in-process: Redis first (checked with a PING), then NATS, then serving. */
export async function startDirectory(config: DirectoryConfig, logger: ServiceLogger): Promise<RunningDirectory> {
  const serviceMetrics = createServiceMetrics("directory", directoryProcessName);
  const redisTlsCa = config.redisTlsCaFile === undefined ? undefined : await readFile(config.redisTlsCaFile, "utf8");
  const redis = createRedisClient(config, logger, redisTlsCa);
  await connectRedis(redis, config.redisUrl);
  let connection: NatsConnection;
  try {
    connection = await connectNats(
      [...config.natsServers],
      directoryProcessName,
      logger,
      config.natsAccess ?? anonymousNatsAccess("directory"),
      serviceMetrics,
    );
  } catch (error) {
    await closeRedis(redis);
    throw error;
  }
  const nats = watchNatsConnected(connection);
  const metrics = createDirectoryMetrics(serviceMetrics.registry, () => redis.status === "ready");
  // Waits of the rebuild's retry loop end at once when the directory stops.
  const stopped = new AbortController();
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      stopped.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
    });
  let rebuilder: DirectoryRebuilder | undefined;
  const directory = new RedisDirectory(redis, config.namespace, {
    forgotten: () => void rebuilder?.ensure(),
    replicaAcksMin: config.redisReplicaAcksMin,
    replicaWaitMs: config.redisReplicaWaitMs,
  });
  rebuilder = new DirectoryRebuilder({
    directory,
    listCellIds: () => listCellIds(connection, config.namespace, cellsMax),
    inventoryPage: (cellId, kind, afterId, limit) => requestInventoryPage(connection, config.namespace, cellId, kind, afterId, limit),
    logger,
    uniqueId: randomUUID,
    sleep,
    limits: rebuildLimitsDefault,
    rebuilt: metrics.rebuilt,
  });
  const service = new DirectoryService(
    connection,
    directory,
    config.namespace,
    config.requestsInFlightMax,
    logger,
    Math.random,
    metrics.service,
  );
  service.start();
  // Flushing makes the subscription known to the server before callers are told the directory serves.
  await connection.flush();
  // Lookups are served meanwhile (the cells' workers may need the directory to start before they can
  // answer the rebuild); placements wait for the marker.
  const firstRebuild = rebuilder.ensure();
  await Promise.race([firstRebuild, sleep(firstRebuildWaitMs)]);
  let stopping: Promise<void> | undefined;
  const stopServing = (): Promise<void> =>
    (stopping ??= (async () => {
      stopped.abort();
      await rebuilder.stop();
      await service.stop();
      await connection.drain();
      await closeRedis(redis);
    })());
  const admin = await startDirectoryAdmin(config, serviceMetrics, redis, nats).catch(async (error: unknown) => {
    await stopServing();
    throw error;
  });
  const adminAddress = `${config.adminHost ?? directoryConfigDefaults.adminHost}:${admin.port}`;
  logger.info(
    `serving ${directorySubject(config.namespace)} (queue ${directoryQueueGroup}) from redis at ${redactRedisUrl(config.redisUrl)}; admin listener on ${adminAddress}`,
    { adminPort: admin.port },
  );
  // The admin listener goes last: a scraper sees the directory until it is gone.
  return { adminPort: admin.port, stop: () => stopServing().then(() => admin.stop()) };
}
