// The worker's typed config, built from an environment record by a pure function. Only main.ts passes
// process.env in; tests and the launcher build WorkerConfig values directly.
import {
  ConfigError,
  devDirectConversationKey,
  directConversationKeyLengthMin,
  EnvironmentReader,
  logLevelDefault,
  logLevels,
  readNatsAccess,
  tracingField,
  type Environment,
  type LogLevel,
  type NatsAccess,
  type TracingConfig,
} from "@cellwire/cluster";
import { cellIdPattern, namespacePattern, workerIdPattern } from "@cellwire/protocol";
import { defaultPostgresAdminUrl, type PostgresTimeouts } from "./store/database.ts";

export type { PostgresTimeouts };

export type WorkerConfig = {
  readonly namespace: string;
  readonly natsServers: readonly string[];
  /** The worker's NATS user, password and TLS (CELLWIRE_NATS_*, docs/decisions/0015); absent: anonymous. */
  readonly natsAccess?: NatsAccess;
  readonly cellId: string;
  /** Unique within the cell, e.g. "a-1"; names the worker's lease and subject. */
  readonly workerId: string;
  /** WORKER_LOG_LEVEL: the least severe level written (docs/decisions/0033); absent: info. */
  readonly logLevel?: LogLevel;
  /** A server URL with rights to create databases; the cell database's URL is derived from it. */
  readonly postgresAdminUrl: string;
  /** Other processes consider the worker gone this long after its last lease renewal. */
  readonly leaseMs: number;
  /**
   * CELLWIRE_DIRECT_CONVERSATION_KEY, the same as the edges': direct conversation ids are derived with
   * it (cluster direct-conversation.ts). Absent: the public dev key.
   */
  readonly directConversationKey?: string;
  readonly heartbeatIntervalMs: number;
  /**
   * Replicas of the cell's membership bucket when this worker is the one that creates it: 1 on a single
   * NATS server, 3 on a NATS cluster so the leases outlive one node. Optional so that configs built by hand
   * for a single server need not name it; absent means 1.
   */
  readonly membershipBucketReplicas?: number;
  /** The cell's capacity weight, sent to the directory for placement. */
  readonly cellWeight: number;
  /** Postgres connections of this worker. */
  readonly poolSize: number;
  /** How long a starting worker keeps trying to register its cell with the directory. */
  readonly directoryWaitMs: number;
  /** Requests queued or running for one conversation; past it: overloaded. */
  readonly pendingPerConversationMax: number;
  /** Requests queued or running on the worker; past it: overloaded. */
  readonly pendingTotalMax: number;
  /** The sweeper's period: it re-drives outbox rows left behind for conversations this worker owns. */
  readonly outboxSweepIntervalMs: number;
  /** Outbox rows younger than this are left to the relay that wrote them. */
  readonly outboxRetryAfterMs: number;
  /** Outbox rows read at once (a relay's batch, a sweep's page). */
  readonly outboxBatchMax: number;
  /** Pages of outboxBatchMax rows one sweep reads. */
  readonly outboxSweepPagesMax: number;
  /** Recipients of one relay served at once. */
  readonly relayRecipientsConcurrencyMax: number;
  /** Mailbox appends in flight from this worker. */
  readonly relaysInFlightMax: number;
  /** Relay tasks queued or running; past it rows wait for the sweeper. */
  readonly relayPendingMax: number;
  /** Conversations remembered as having an empty outbox (a relay then needs no outbox read). */
  readonly relayCleanConversationsMax: number;
  /** One attempt of a mailbox append waits this long for the owner's reply. */
  readonly relayRequestTimeoutMs: number;
  /** Attempts of one mailbox append (the router retries on another owner); then the row waits for the sweeper. */
  readonly relayAttemptsMax: number;
  /** Cells whose membership the relay watches at once. */
  readonly relayWatchedCellsMax: number;
  /**
   * A cell the relay's (or migration's) router has not routed to for this long stops being watched: an
   * idle watch still receives every lease renewal of its cell. Absent: 30,000.
   */
  readonly relayWatchIdleMs?: number;
  /** How long stop() waits for relays in flight. */
  readonly relayStopWaitMs: number;
  /**
   * A row whose relay failed waits before its next one (docs/decisions/0022): at least
   * relayRetryDelayMsMin, the ceiling doubling per failure up to relayRetryDelayMsMax, with jitter. At
   * relayFailuresMax failures the recipient's rows of the conversation go to the dead letters. Optional
   * like the migration settings; absent means the defaults below.
   */
  readonly relayRetryDelayMsMin?: number;
  readonly relayRetryDelayMsMax?: number;
  readonly relayFailuresMax?: number;
  /** Users whose home cell is cached for relays. */
  readonly homeCellCacheUsersMax: number;
  readonly homeCellCacheTtlMs: number;
  /**
   * Live migration (optional, so configs built by hand need not name them; absent means the defaults).
   * Keys this worker migrates out at once; past it cell.migrate answers overloaded.
   */
  readonly migrationsInFlightMax?: number;
  /** Deadline of one directory request or one cell.import page (over the router's attempts) of a migration. */
  readonly migrationRequestTimeoutMs?: number;
  /**
   * The frozen-key sweeper's period: it resumes the moves of keys frozen here with no mover (the worker
   * moving them died), once seen frozen for a whole period. Optional like the migration settings.
   */
  readonly frozenSweepIntervalMs?: number;
  /** Frozen keys one sweep lists; the next sweep lists those after them (a cursor that wraps). */
  readonly frozenSweepKeysMax?: number;
  /** Moves one sweep resumes at once (each takes one of WORKER_MIGRATIONS_IN_FLIGHT_MAX; past it a resume waits for the next sweep). */
  readonly frozenSweepResumesMax?: number;
  /**
   * Group commit (send-committer.ts; optional like the migration settings). Sends one statement stores at
   * most; sends waiting for their batch before one more is refused `overloaded`; how long a send may
   * wait for its batch before it is refused `overloaded` instead of stored.
   */
  readonly sendBatchMax?: number;
  readonly sendsPendingMax?: number;
  readonly sendQueueWaitMsMax?: number;
  /**
   * How long a send waits for others before its statement starts when the worker is busy (its last
   * WORKER_SEND_BUSY_SENDS_MIN sends arrived within WORKER_SEND_BUSY_WINDOW_MS); 0 never waits. See
   * send-committer.ts (SendLinger).
   */
  readonly sendLingerMs?: number;
  readonly sendBusyWindowMs?: number;
  readonly sendBusySendsMin?: number;
  /**
   * How long after its receipt a send's commit is tried again while the database cannot be reached
   * (refused, reset, restarting), within its caller's budget: a Postgres restart shorter than this costs
   * latency, not failed sends (docs/decisions/0025). 0 answers such a send cell_unavailable at once.
   */
  readonly sendRetryWindowMs?: number;
  /** Conversations whose member lists the publisher caches (a miss costs one read). */
  readonly memberCacheConversationsMax?: number;
  /**
   * Timeouts of the worker's Postgres connections (optional like the migration settings; absent means the
   * defaults below; see docs/decisions/0019). Every one bounds a wait that would otherwise hold a
   * conversation's turn: server-side (statement, lock, idle in transaction), client-side (connect, query:
   * the only one that ends a wait on a silent network) and TCP keepalive on every connection.
   */
  readonly postgresTimeouts?: PostgresTimeouts;
  /**
   * A worker whose database answered no probe for this long gives up its lease (its keys go to the other
   * workers of the cell) and rejoins once a probe succeeds again; it probes every
   * postgresProbeIntervalMs. Default: the client's request timeout, the longest a send is waited for.
   */
  readonly databaseUnreachableMs?: number;
  readonly postgresProbeIntervalMs?: number;
  /**
   * The admin listener (/metrics, /livez, /readyz): WORKER_ADMIN_HOST, loopback by default, since what it
   * shows is for the deployment's own scrapers; WORKER_ADMIN_PORT, 0 for a free port (printed in the ready
   * line and told to the launcher). Optional like the migration settings; absent means the defaults.
   */
  readonly adminHost?: string;
  readonly adminPort?: number;
  /** OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME (docs/decisions/0034); no endpoint: tracing off. Absent: off. */
  readonly tracing?: TracingConfig;
};

/** The edges' clients give a send this long (client requestTimeoutMs); a worker past it serves nobody. */
export const clientRequestTimeoutMs = 10_000;
export const postgresTimeoutsDefault: PostgresTimeouts = {
  connectTimeoutMs: 5000,
  statementTimeoutMs: 10_000,
  // Half a send's deadline: a send stuck behind a row lock fails retryably while the client still waits.
  lockTimeoutMs: 5000,
  idleInTransactionTimeoutMs: 10_000,
  // Past the statement timeout, so that on a live network Postgres's own cancel answers first.
  queryTimeoutMs: 11_000,
  keepAliveInitialDelayMs: 5000,
};
export const databaseUnreachableMsDefault = clientRequestTimeoutMs;
export const adminHostDefault = "127.0.0.1";
export const adminPortDefault = 0;
export const postgresProbeIntervalMsDefault = 1000;
export const relayWatchIdleMsDefault = 30_000;

export const sendBatchMaxDefault = 512;
export const sendsPendingMaxDefault = 4096;
export const sendQueueWaitMsMaxDefault = 1000;
export const memberCacheConversationsMaxDefault = 10_000;
export const sendLingerMsDefault = 3;
export const sendBusyWindowMsDefault = 20;
export const sendBusySendsMinDefault = 4;
/** The edge's deadline for a cell request (EDGE_CELL_REQUEST_DEADLINE_MS): past it nobody waits for the send. */
export const sendRetryWindowMsDefault = 8000;

// 1 s doubling to 5 min: 16 failures take about half an hour, long enough for a cell to come back.
export const relayRetryDelayMsMinDefault = 1000;
export const relayRetryDelayMsMaxDefault = 300_000;
export const relayFailuresMaxDefault = 16;

export const migrationsInFlightMaxDefault = 16;
export const migrationRequestTimeoutMsDefault = 10_000;
export const frozenSweepIntervalMsDefault = 5000;
export const frozenSweepKeysMaxDefault = 100;
export const frozenSweepResumesMaxDefault = 4;

/** A host name or an IPv4/IPv6 address to listen on (no scheme, no port). */
export const adminHostPattern = /^[A-Za-z0-9.:-]{1,253}$/;

export type LoadedWorkerConfig = {
  readonly config: WorkerConfig;
  /** WORKER_* variables that no setting reads: most likely typos, for main.ts to report. */
  readonly unknownVariables: readonly string[];
};

function directConversationKey(reader: EnvironmentReader): string {
  const key = reader.optionalString("CELLWIRE_DIRECT_CONVERSATION_KEY") ?? devDirectConversationKey;
  if (key.length < directConversationKeyLengthMin)
    throw new ConfigError(`CELLWIRE_DIRECT_CONVERSATION_KEY must have at least ${directConversationKeyLengthMin} characters`);
  return key;
}

export function loadWorkerConfig(environment: Environment): LoadedWorkerConfig {
  const reader = new EnvironmentReader(environment, ["WORKER_"]);
  const required = (name: string, pattern: RegExp, example: string): string => {
    const value = reader.optionalString(name);
    if (value === undefined) throw new ConfigError(`${name} is required (for example ${example})`);
    return reader.string(name, value, pattern);
  };
  const natsServers = reader
    .string("CELLWIRE_NATS_SERVERS", "127.0.0.1:4222")
    .split(",")
    .map((server) => server.trim())
    .filter((server) => server !== "");
  if (natsServers.length === 0) throw new ConfigError("CELLWIRE_NATS_SERVERS must name at least one server");
  const config: WorkerConfig = {
    ...tracingField(environment),
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers,
    natsAccess: readNatsAccess(reader, "worker"),
    cellId: required("WORKER_CELL_ID", cellIdPattern, "a"),
    workerId: required("WORKER_ID", workerIdPattern, "a-1"),
    logLevel: reader.oneOf("WORKER_LOG_LEVEL", logLevelDefault, logLevels),
    postgresAdminUrl: postgresUrl(reader.string("WORKER_POSTGRES_ADMIN_URL", defaultPostgresAdminUrl)),
    leaseMs: reader.integer("WORKER_LEASE_MS", 1500, 100, 600_000),
    directConversationKey: directConversationKey(reader),
    heartbeatIntervalMs: reader.integer("WORKER_HEARTBEAT_INTERVAL_MS", 300, 20, 300_000),
    // JetStream allows at most 5 replicas of a stream, each on its own server of the cluster.
    membershipBucketReplicas: reader.integer("WORKER_KV_REPLICAS", 1, 1, 5),
    cellWeight: reader.integer("WORKER_CELL_WEIGHT", 100, 1, 1_000_000),
    poolSize: reader.integer("WORKER_POOL_SIZE", 10, 1, 200),
    directoryWaitMs: reader.integer("WORKER_DIRECTORY_WAIT_MS", 15_000, 0, 600_000),
    pendingPerConversationMax: reader.integer("WORKER_PENDING_PER_CONVERSATION_MAX", 256, 1, 100_000),
    pendingTotalMax: reader.integer("WORKER_PENDING_TOTAL_MAX", 10_000, 1, 1_000_000),
    outboxSweepIntervalMs: reader.integer("WORKER_OUTBOX_SWEEP_INTERVAL_MS", 1000, 10, 600_000),
    outboxRetryAfterMs: reader.integer("WORKER_OUTBOX_RETRY_AFTER_MS", 2000, 0, 86_400_000),
    outboxBatchMax: reader.integer("WORKER_OUTBOX_BATCH_MAX", 1000, 1, 10_000),
    outboxSweepPagesMax: reader.integer("WORKER_OUTBOX_SWEEP_PAGES_MAX", 10, 1, 1000),
    relayRecipientsConcurrencyMax: reader.integer("WORKER_RELAY_RECIPIENTS_CONCURRENCY_MAX", 32, 1, 10_000),
    relaysInFlightMax: reader.integer("WORKER_RELAYS_IN_FLIGHT_MAX", 256, 1, 100_000),
    relayPendingMax: reader.integer("WORKER_RELAY_PENDING_MAX", 10_000, 2, 1_000_000),
    relayCleanConversationsMax: reader.integer("WORKER_RELAY_CLEAN_CONVERSATIONS_MAX", 10_000, 1, 1_000_000),
    relayRequestTimeoutMs: reader.integer("WORKER_RELAY_REQUEST_TIMEOUT_MS", 2000, 50, 60_000),
    relayAttemptsMax: reader.integer("WORKER_RELAY_ATTEMPTS_MAX", 3, 1, 20),
    relayWatchedCellsMax: reader.integer("WORKER_RELAY_WATCHED_CELLS_MAX", 100, 1, 10_000),
    relayWatchIdleMs: reader.integer("WORKER_RELAY_WATCH_IDLE_MS", relayWatchIdleMsDefault, 100, 86_400_000),
    relayStopWaitMs: reader.integer("WORKER_RELAY_STOP_WAIT_MS", 5000, 0, 600_000),
    relayRetryDelayMsMin: reader.integer("WORKER_RELAY_RETRY_DELAY_MS_MIN", relayRetryDelayMsMinDefault, 1, 3_600_000),
    relayRetryDelayMsMax: reader.integer("WORKER_RELAY_RETRY_DELAY_MS_MAX", relayRetryDelayMsMaxDefault, 1, 86_400_000),
    relayFailuresMax: reader.integer("WORKER_RELAY_FAILURES_MAX", relayFailuresMaxDefault, 1, 1000),
    homeCellCacheUsersMax: reader.integer("WORKER_HOME_CELL_CACHE_USERS_MAX", 100_000, 1, 10_000_000),
    homeCellCacheTtlMs: reader.integer("WORKER_HOME_CELL_CACHE_TTL_MS", 60_000, 1, 86_400_000),
    migrationsInFlightMax: reader.integer("WORKER_MIGRATIONS_IN_FLIGHT_MAX", migrationsInFlightMaxDefault, 1, 10_000),
    migrationRequestTimeoutMs: reader.integer("WORKER_MIGRATION_REQUEST_TIMEOUT_MS", migrationRequestTimeoutMsDefault, 100, 600_000),
    frozenSweepIntervalMs: reader.integer("WORKER_FROZEN_SWEEP_INTERVAL_MS", frozenSweepIntervalMsDefault, 10, 600_000),
    frozenSweepKeysMax: reader.integer("WORKER_FROZEN_SWEEP_KEYS_MAX", frozenSweepKeysMaxDefault, 1, 10_000),
    frozenSweepResumesMax: reader.integer("WORKER_FROZEN_SWEEP_RESUMES_MAX", frozenSweepResumesMaxDefault, 1, 1000),
    sendBatchMax: reader.integer("WORKER_SEND_BATCH_MAX", sendBatchMaxDefault, 1, 10_000),
    sendsPendingMax: reader.integer("WORKER_SENDS_PENDING_MAX", sendsPendingMaxDefault, 1, 1_000_000),
    sendQueueWaitMsMax: reader.integer("WORKER_SEND_QUEUE_WAIT_MS_MAX", sendQueueWaitMsMaxDefault, 1, 600_000),
    memberCacheConversationsMax: reader.integer("WORKER_MEMBER_CACHE_CONVERSATIONS_MAX", memberCacheConversationsMaxDefault, 1, 10_000_000),
    sendLingerMs: reader.integer("WORKER_SEND_LINGER_MS", sendLingerMsDefault, 0, 1000),
    sendBusyWindowMs: reader.integer("WORKER_SEND_BUSY_WINDOW_MS", sendBusyWindowMsDefault, 0, 60_000),
    sendBusySendsMin: reader.integer("WORKER_SEND_BUSY_SENDS_MIN", sendBusySendsMinDefault, 1, 1000),
    sendRetryWindowMs: reader.integer("WORKER_SEND_RETRY_WINDOW_MS", sendRetryWindowMsDefault, 0, 600_000),
    postgresTimeouts: {
      connectTimeoutMs: reader.integer("WORKER_POSTGRES_CONNECT_TIMEOUT_MS", postgresTimeoutsDefault.connectTimeoutMs, 100, 600_000),
      statementTimeoutMs: reader.integer(
        "WORKER_POSTGRES_STATEMENT_TIMEOUT_MS",
        postgresTimeoutsDefault.statementTimeoutMs,
        100,
        3_600_000,
      ),
      lockTimeoutMs: reader.integer("WORKER_POSTGRES_LOCK_TIMEOUT_MS", postgresTimeoutsDefault.lockTimeoutMs, 100, 3_600_000),
      idleInTransactionTimeoutMs: reader.integer(
        "WORKER_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        postgresTimeoutsDefault.idleInTransactionTimeoutMs,
        100,
        3_600_000,
      ),
      queryTimeoutMs: reader.integer("WORKER_POSTGRES_QUERY_TIMEOUT_MS", postgresTimeoutsDefault.queryTimeoutMs, 100, 3_600_000),
      // TCP keepalive has a resolution of one second.
      keepAliveInitialDelayMs: reader.integer(
        "WORKER_POSTGRES_KEEPALIVE_INITIAL_DELAY_MS",
        postgresTimeoutsDefault.keepAliveInitialDelayMs,
        1000,
        3_600_000,
      ),
    },
    databaseUnreachableMs: reader.integer("WORKER_DATABASE_UNREACHABLE_MS", databaseUnreachableMsDefault, 100, 3_600_000),
    postgresProbeIntervalMs: reader.integer("WORKER_POSTGRES_PROBE_INTERVAL_MS", postgresProbeIntervalMsDefault, 10, 600_000),
    adminHost: reader.string("WORKER_ADMIN_HOST", adminHostDefault, adminHostPattern),
    adminPort: reader.integer("WORKER_ADMIN_PORT", adminPortDefault, 0, 65_535),
  };
  // Two heartbeats per lease at least, so one late renewal does not make the worker look dead.
  if (config.heartbeatIntervalMs * 2 > config.leaseMs) {
    throw new ConfigError(
      `WORKER_HEARTBEAT_INTERVAL_MS (${config.heartbeatIntervalMs}) must be at most half of WORKER_LEASE_MS (${config.leaseMs})`,
    );
  }
  if (config.pendingPerConversationMax > config.pendingTotalMax) {
    throw new ConfigError("WORKER_PENDING_PER_CONVERSATION_MAX must not exceed WORKER_PENDING_TOTAL_MAX");
  }
  if ((config.relayRetryDelayMsMin ?? relayRetryDelayMsMinDefault) > (config.relayRetryDelayMsMax ?? relayRetryDelayMsMaxDefault)) {
    throw new ConfigError(
      `WORKER_RELAY_RETRY_DELAY_MS_MIN (${config.relayRetryDelayMsMin}) must not exceed WORKER_RELAY_RETRY_DELAY_MS_MAX (${config.relayRetryDelayMsMax})`,
    );
  }
  // A probe per interval at least twice within the bound, so one slow probe does not give up the lease.
  if (
    (config.postgresProbeIntervalMs ?? postgresProbeIntervalMsDefault) * 2 >
    (config.databaseUnreachableMs ?? databaseUnreachableMsDefault)
  ) {
    throw new ConfigError(
      `WORKER_POSTGRES_PROBE_INTERVAL_MS (${config.postgresProbeIntervalMs}) must be at most half of WORKER_DATABASE_UNREACHABLE_MS (${config.databaseUnreachableMs})`,
    );
  }
  return { config, unknownVariables: reader.unknownVariables() };
}

function postgresUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError("WORKER_POSTGRES_ADMIN_URL must be a URL like postgres://user@host:5432/postgres");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new ConfigError("WORKER_POSTGRES_ADMIN_URL must start with postgres:// or postgresql://");
  }
  return value;
}
